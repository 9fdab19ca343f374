"""Ingest throughput: the full pipeline against a bare QoS 1 subscriber, on one broker.

Both runs are fed by the same publisher, `iot-sim` with many devices on one MQTT connection
publishing flat out (QoS 1) a fixed number of readings:
(a) baseline: a bare paho subscriber (MQTT 5, QoS 1, auto-ack) that only counts;
(b) pipeline: the ingest worker writing to InfluxDB (batches, manual acks, averages).

Throughput of a run = readings / (consumer done - publisher's first publish), where done is the
arrival of the last reading at the bare subscriber, or the worker's last successful store write
of readings (its ingest_last_stored_timestamp_seconds gauge). `lost` is published minus the
distinct (series, timestamp) points found in InfluxDB. `p99_store_latency_ms` is read
from the worker's store-write histogram (interpolated within its bucket).

Runs alternate (baseline, pipeline) BENCH_INGEST_ROUNDS times (default 2) and the best run of
each side is compared, since the 2-core machine is shared and its load drifts.

Environment: BENCH_INGEST_READINGS (default 50000), BENCH_INGEST_DEVICES (default 200),
BENCH_INGEST_PROFILE=1 to profile the worker (cProfile of every thread, written under
bench/results/ingest-profile.txt).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench import harness
from bench.common import RESULTS_DIR, write_result
from broker_auth import acl_model
from broker_auth.acl_model import Client
from stack import procs
from stack.scrape import scrape_metrics

PUBLISHER = "bench.publisher"


def histogram_quantile(metrics: dict[str, float], name: str, q: float) -> float:
    """Prometheus-style quantile from cumulative buckets (linear within the bucket)."""
    buckets = []
    for key, value in metrics.items():
        m = re.fullmatch(rf'{name}_bucket\{{le="([^"]+)"\}}', key)
        if m:
            buckets.append((float(m.group(1)), value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def run_simulator(mq: procs.MosquittoHandle, password: str, prefix: str, n: int, devices: int):
    argv = [
        sys.executable,
        "-m",
        "simulator",
        "--port",
        str(mq.port),
        "--devices",
        str(devices),
        "--device-prefix",
        prefix,
        "--rate",
        "0",
        "--count",
        str(n),
        "--username",
        PUBLISHER,
        "--max-queue",
        "2000",
        "--seed",
        "7",
        "--json",
    ]
    # The password goes by environment: not on a command line (and one starting with "-"
    # would be read as an option).
    env = {**os.environ, "SIM_PASSWORD": password}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=150, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"simulator failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


class CountingSubscriber:
    """The baseline: receive QoS 1, count, nothing else."""

    def __init__(self, port: int, password: str, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.last_at = 0.0
        self.done = threading.Event()
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-baseline", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(acl_model.INGEST_USERNAME, password)
        self.client.on_connect = lambda c, *_: c.subscribe("live/+/+", qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, _msg: mqtt.MQTTMessage) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.last_at = time.time()
            self.done.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def count_stored(store: procs.InfluxHandle, prefix: str) -> int:
    return store.reader().count_where_prefix("reading", "value", "device", prefix)


def _worker_argv(profile_to: Path | None) -> list[str] | None:
    if profile_to is None:
        return None
    code = (
        "import cProfile, pstats, threading, sys, io\n"
        "profs = []\n"
        "def hook(*a):\n"
        "    p = cProfile.Profile(); profs.append(p); p.enable()\n"
        "threading.setprofile(hook)\n"
        "main_prof = cProfile.Profile(); profs.append(main_prof); main_prof.enable()\n"
        "from ingest.__main__ import main\n"
        "try:\n    main()\nfinally:\n"
        "    main_prof.disable()\n"
        "    s = io.StringIO(); st = pstats.Stats(main_prof, stream=s)\n"
        "    [st.add(p) for p in profs[1:] if p.getstats()]\n"
        "    st.sort_stats('tottime').print_stats(35)\n"
        f"    open({str(profile_to)!r}, 'w').write(s.getvalue())\n"
    )
    return [sys.executable, "-c", code]


def run_pipeline(
    workdir: Path,
    mq: procs.MosquittoHandle,
    store: procs.InfluxHandle,
    pub_password: str,
    n: int,
    devices: int,
    profile_to: Path | None,
    prefix: str,
) -> dict[str, Any]:
    metrics_port = procs.free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    env = {
        "MQTT_PORT": str(mq.port),
        "INGEST_MQTT_PASSWORD": mq.ingest_password,
        "INGEST_CLIENT_ID": f"bench-ingest-{prefix}",
        **store.writer_env,
        "INGEST_METRICS_PORT": str(metrics_port),
        "INGEST_METRICS_HOST": "127.0.0.1",
        "INGEST_LOG_LEVEL": "WARNING",
    }

    def ready() -> bool:
        try:
            return scrape_metrics(metrics_url).get("ingest_mqtt_ready") == 1.0
        except OSError:
            return False

    worker = procs.python_service(f"ingest-{prefix}", "ingest", workdir, env, ready=ready)
    custom = _worker_argv(profile_to)
    if custom:
        worker.argv = custom
    worker.start()
    try:
        summary = run_simulator(mq, pub_password, prefix, n, devices)
        deadline = time.monotonic() + 120
        while (
            scrape_metrics(metrics_url).get("ingest_readings_stored_total", 0)
            < summary["published"]
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not store every reading within 120 s")
            time.sleep(0.25)
        m = scrape_metrics(metrics_url)
    finally:
        worker.stop()
    stored = count_stored(store, prefix)
    elapsed = m["ingest_last_stored_timestamp_seconds"] - summary["started_at"]
    writes = m["ingest_store_write_seconds_count"]
    return {
        "published": summary["published"],
        "publisher_send_rate_per_s": summary["send_rate_per_s"],
        "readings_per_s": round(summary["published"] / elapsed, 1),
        "stored": stored,
        "lost": summary["published"] - stored,
        "p99_store_latency_ms": round(
            1000 * histogram_quantile(m, "ingest_store_write_seconds", 0.99), 1
        ),
        "mean_store_latency_ms": round(1000 * m["ingest_store_write_seconds_sum"] / writes, 1),
        "store_writes": int(writes),
        "mean_batch_points": round(m["ingest_store_batch_points_sum"] / writes, 1),
        "rejected": int(
            sum(v for k, v in m.items() if k.startswith("ingest_readings_rejected_total"))
        ),
    }


def run_baseline(mq: procs.MosquittoHandle, pub_password: str, n: int, devices: int, prefix: str):
    sub = CountingSubscriber(mq.port, mq.ingest_password, n)
    try:
        if not sub.ready.wait(10):
            raise TimeoutError("baseline subscriber not subscribed")
        summary = run_simulator(mq, pub_password, prefix, n, devices)
        if not sub.done.wait(120):
            raise TimeoutError(f"baseline got {sub.count} of {n}")
    finally:
        sub.close()
    elapsed = sub.last_at - summary["started_at"]
    return {
        "published": summary["published"],
        "publisher_send_rate_per_s": summary["send_rate_per_s"],
        "readings_per_s": round(summary["published"] / elapsed, 1),
    }


def main() -> int:
    n = int(os.environ.get("BENCH_INGEST_READINGS", "50000"))
    devices = int(os.environ.get("BENCH_INGEST_DEVICES", "200"))
    rounds = int(os.environ.get("BENCH_INGEST_ROUNDS", "2"))
    profile_to = (
        RESULTS_DIR / "ingest-profile.txt" if os.environ.get("BENCH_INGEST_PROFILE") else None
    )
    pub_password = secrets.token_urlsafe(12)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        mq = procs.mosquitto(
            workdir / "mosquitto",
            admin_password=secrets.token_urlsafe(12),
            ingest_password=secrets.token_urlsafe(12),
            extra_clients=[Client(PUBLISHER, pub_password, ("bench-publisher",))],
            extra_roles=[harness.publisher_role()],
        )
        store = procs.influx(workdir / "influxdb")
        baselines, pipelines = [], []
        try:
            # Interleaved rounds: the machine is shared, so load drifts; keep each side's best.
            for r in range(rounds):
                baselines.append(run_baseline(mq, pub_password, n, devices, f"bb{r}-"))
                pipelines.append(
                    run_pipeline(
                        workdir, mq, store, pub_password, n, devices, profile_to, f"bp{r}-"
                    )
                )
        finally:
            store.proc.stop()
            mq.proc.stop()
    baseline_rate = max(b["readings_per_s"] for b in baselines)
    pipeline_rate = max(p["readings_per_s"] for p in pipelines)
    lost = sum(p["lost"] for p in pipelines)
    figures = {
        "readings": n,
        "devices": devices,
        "rounds": rounds,
        "readings_per_s": pipeline_rate,
        "baseline_readings_per_s": baseline_rate,
        "ratio": round(pipeline_rate / baseline_rate, 3),
        "lost": lost,
        "p99_store_latency_ms": max(p["p99_store_latency_ms"] for p in pipelines),
        "mean_store_latency_ms": max(p["mean_store_latency_ms"] for p in pipelines),
        "mean_batch_points": min(p["mean_batch_points"] for p in pipelines),
        "runs": {
            "baseline_readings_per_s": [b["readings_per_s"] for b in baselines],
            "pipeline_readings_per_s": [p["readings_per_s"] for p in pipelines],
            "publisher_send_rate_per_s": {
                "baseline": [b["publisher_send_rate_per_s"] for b in baselines],
                "pipeline": [p["publisher_send_rate_per_s"] for p in pipelines],
            },
            "lost": [p["lost"] for p in pipelines],
            "rejected": [p["rejected"] for p in pipelines],
        },
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "target": "ratio >= 0.7 with lost = 0",
    }
    if profile_to is not None:
        figures["profile"] = str(profile_to)
    write_result("ingest", figures)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
