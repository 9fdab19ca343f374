"""One ingest pipeline run fed by `iot-sim` (the Python publisher), shared by the benchmarks
that measure around it (acl, access, soak): the worker writing to InfluxDB, with its store
latency from its histogram. bench/ingest.py compares consumers with a C publisher instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness
from testing import procs
from testing.scrape import scrape_metrics

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

    ready = harness.mqtt_ready(metrics_url)
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
