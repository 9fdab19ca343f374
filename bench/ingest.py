"""Ingest throughput: the ingest workers against other consumers of the same readings.

One broker (Mosquitto, the project's configuration) and one InfluxDB; the same readings for
every consumer: BENCH_INGEST_READINGS (default 200,000: a backlog long enough that start-up does
not dominate) QoS 1 JSON readings with their own millisecond `ts`, from BENCH_INGEST_DEVICES
(default 200) devices. The publisher is bench/blast.py: PUBLISH packets encoded before the
clock starts, written over 4 connections (its rate with nobody subscribed is measured first,
as its headroom; `mosquitto_pub -l` sends one line at a time, ~8 a second per process here).

Consumers:
- `workers-N` (BENCH_INGEST_WORKERS, default "1,2"): N=1 the single worker owning its
  averages; N>1 workers on a shared subscription forwarding to the averager;
- `telegraf`: Telegraf 1.37 (mqtt_consumer -> influxdb_v2, `precision = "1ms"`), built for the
  benchmark only (scripts/bootstrap.sh telegraf); skipped, and said so, if not built;
- `paho`: a bare paho subscriber (bench/bare_subscriber.py) that only counts, no store;
- `mosquitto_sub`: the C client, counting to /dev/null, no store.

Modes:
- `live`: the consumer runs; the publishers send flat out. Rate = readings / (done - first
  publish);
- `backlog`: the consumer subscribes (persistent session) and goes away; everything is
  published and queued by the broker; then the consumer starts. Rate = readings / (done -
  consumer launch), so start-up counts.
`done`: the last store write (workers: their gauge), or the store's count reaching the readings
(Telegraf: polled every 0.1 s), or the last message (paho, mosquitto_sub). `lost`: readings
minus distinct points stored (store writers) or received (the others). CPU per 10k readings:
user + system time of each consumer process from its readiness (workers) or launch (others)
to the end. Rounds (BENCH_INGEST_ROUNDS, default 2) interleave the consumers in rotated order
and each figure is the best round's; the load average is recorded with each run.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testing.mqtt
from bench import harness
from bench.common import write_result
from broker_auth.broker import acl_model
from broker_auth.broker.acl_model import Client
from testing import procs
from testing.scrape import scrape_metrics

PUBLISHER = "bench.publisher"
BARE = ("paho", "mosquitto_sub")
# Every consumer logs in as the ingest account, with a client id of its own (`svc.ingest:...`).
OWN = f"{acl_model.INGEST_USERNAME}:"
REPO = procs.REPO_ROOT
TELEGRAF = REPO / ".tools" / "bin" / "telegraf"


@dataclass
class Bench:
    workdir: Path
    mq: procs.MosquittoHandle
    store: procs.InfluxHandle
    pub_password: str
    n: int
    devices: int
    runs: int = 0

    def prefix(self, name: str) -> str:
        self.runs += 1
        return f"b{self.runs}{name.replace('-', '')}-"

    # ---- publisher
    def publish(self, prefix: str) -> dict[str, float]:
        """All readings, over 4 connections, by bench/blast.py; returns when all are acked."""
        argv = [
            sys.executable, "-m", "bench.blast", str(self.mq.port), PUBLISHER, prefix,
            str(self.n), str(self.devices), "4",
        ]  # fmt: skip
        env = {**os.environ, "BENCH_PUB_PASSWORD": self.pub_password, "PYTHONPATH": str(REPO)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"publisher failed: {done.stderr[-2000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        elapsed = out["acked_at"] - out["started_at"]
        return {
            "started_at": out["started_at"],
            "published": out["published"],
            "publisher_per_s": round(out["published"] / elapsed, 1),
            "publisher_cpu_s_per_10k": round(out["cpu_s"] / out["published"] * 10_000, 3),
        }

    def cpu_of(self, proc: procs.Proc) -> float:
        return harness.proc_cpu_seconds(harness.pid_of(proc))

    def stored(self, prefix: str) -> int:
        return self.store.reader().count_where_prefix("reading", "value", "device", prefix)


# ---------------------------------------------------------------- consumers


@dataclass
class Consumer:
    """A consumer set up for one run: start it, tell when it is done, what it cost."""

    procs_: list[procs.Proc]
    done: Callable[[], float | None]  # the done time once done
    delivered: Callable[[], int]
    ready_cpu: dict[str, float] = field(default_factory=dict)
    exited_cpu: Callable[[], float] | None = None  # consumers that exit when done
    client_ids: list[str] = field(default_factory=list)  # sessions to clear after the run
    next_poll_s: Callable[[], float] = lambda: 0.02  # how long until `done` is asked again

    def start(self, count_from_launch: bool = False) -> float:
        """Start (waiting for readiness); CPU is counted from readiness, or from launch."""
        launched = time.time()
        checks = [p.ready for p in self.procs_]
        for p in self.procs_:  # all at once (a worker alone would drain the backlog alone)
            p.ready = None
            p.start()
        for p, check in zip(self.procs_, checks, strict=True):
            p.ready = check
            if check is not None:
                procs.wait_until(check, 30, f"{p.name} ready", 0.01)
        for p in self.procs_:
            cpu = harness.proc_cpu_seconds(harness.pid_of(p))
            self.ready_cpu[p.name] = 0.0 if count_from_launch else cpu
        return launched

    def cpu(self) -> dict[str, float]:
        if self.exited_cpu is not None:
            return {self.procs_[0].name: self.exited_cpu()}
        return {
            p.name: harness.proc_cpu_seconds(harness.pid_of(p)) - self.ready_cpu[p.name]
            for p in self.procs_
            if p.running()
        }

    def kill(self) -> None:
        for p in self.procs_:
            p.kill()

    def stop(self) -> None:
        for p in self.procs_:
            p.stop()


def workers(b: Bench, count: int, prefix: str) -> Consumer:
    ports = [procs.free_port() for _ in range(count)]
    group = prefix.strip("-")
    processes = []
    for i, port in enumerate(ports):
        env = {
            "MQTT_PORT": str(b.mq.port),
            "INGEST_MQTT_PASSWORD": b.mq.ingest_password,
            "INGEST_CLIENT_ID": f"{OWN}bench-{prefix}{i}",
            **b.store.writer_env,
            "INGEST_METRICS_PORT": str(port),
            "INGEST_LOG_LEVEL": "WARNING",
            "INGEST_REBUILD_LOOKBACK_S": "0",
        }
        if count > 1:
            env |= {"INGEST_AVERAGES": "forward", "INGEST_SHARE_GROUP": group}
        url = f"http://127.0.0.1:{port}/metrics"
        processes.append(
            procs.python_service(
                f"ingest-{prefix}{i}",
                "ingest",
                b.workdir,
                env,
                ready=harness.mqtt_ready(url),
            )
        )
    averager_url: str | None = None
    if count > 1:
        port = procs.free_port()
        url = averager_url = f"http://127.0.0.1:{port}/metrics"
        env = {
            "MQTT_PORT": str(b.mq.port),
            "INGEST_MQTT_PASSWORD": b.mq.ingest_password,
            "INGEST_AVERAGER_CLIENT_ID": f"{OWN}bench-{prefix}avg",
            **b.store.writer_env,
            "INGEST_AVERAGER_METRICS_PORT": str(port),
            "INGEST_LOG_LEVEL": "WARNING",
            "INGEST_REBUILD_LOOKBACK_S": "0",
        }
        processes.append(
            procs.python_service(
                f"averager-{prefix}",
                "ingest.averager",
                b.workdir,
                env,
                ready=harness.mqtt_ready(url),
            )
        )
    urls = [f"http://127.0.0.1:{p}/metrics" for p in ports]

    stored_at: list[float] = []  # when the workers had stored every reading

    def done() -> float | None:
        if not stored_at:
            metrics = [scrape_metrics(u) for u in urls]
            if sum(m.get("ingest_readings_stored_total", 0) for m in metrics) < b.n:
                return None
            stored_at.append(max(m.get("ingest_last_stored_timestamp_seconds", 0) for m in metrics))
        if averager_url is None:
            return stored_at[0]
        # ... and the averages have caught up: the averager took every reading.
        if scrape_metrics(averager_url).get("ingest_averager_readings_total", 0) < b.n:
            return None
        return max(stored_at[0], time.time())  # polled every 20 ms from here

    def next_poll_s() -> float:
        # The workers' own gauge says when they stored the last reading: they are asked every
        # 0.5 s (a scrape every 20 ms took 9 % of a worker's CPU, charged to the worker and
        # taken from its work); the averager has no such gauge: asked every 20 ms once it is
        # the last one running.
        return 0.02 if stored_at else 0.5

    ids = [f"{OWN}bench-{prefix}{i}" for i in range(count)] + (
        [f"{OWN}bench-{prefix}avg"] if count > 1 else []
    )
    return Consumer(
        processes, done, lambda: b.stored(prefix), client_ids=ids, next_poll_s=next_poll_s
    )


def telegraf(b: Bench, prefix: str) -> Consumer:
    conf = b.workdir / f"telegraf-{prefix}.conf"
    conf.write_text(
        f"""
[agent]
  interval = "10s"
  flush_interval = "100ms"
  metric_batch_size = 1000
  metric_buffer_limit = 200000
  omit_hostname = true
  quiet = true

[[inputs.mqtt_consumer]]
  servers = ["tcp://127.0.0.1:{b.mq.port}"]
  topics = ["live/+/+"]
  qos = 1
  client_id = "{OWN}bench-{prefix}telegraf"
  persistent_session = true
  username = "{acl_model.INGEST_USERNAME}"
  password = "${{BENCH_MQTT_PASSWORD}}"
  max_undelivered_messages = 5000
  data_format = "json"
  json_time_key = "ts"
  json_time_format = "unix_ms"
  precision = "1ms"
  topic_tag = ""
  name_override = "reading"
  [[inputs.mqtt_consumer.topic_parsing]]
    topic = "live/+/+"
    tags = "_/device/sensor"

[[outputs.influxdb_v2]]
  urls = ["{b.store.url}"]
  token = "${{BENCH_INFLUX_TOKEN}}"
  organization = ""
  bucket = "telemetry"
"""
    )
    env = {
        "BENCH_MQTT_PASSWORD": b.mq.ingest_password,
        "BENCH_INFLUX_TOKEN": b.store.credentials.writer_token,
    }
    proc = procs.Proc(
        f"telegraf-{prefix}", [str(TELEGRAF), "--config", str(conf)], b.workdir, env=env
    )
    state: dict[str, float] = {"next": 0.0}

    def done() -> float | None:
        now = time.time()
        if now < state["next"]:
            return None
        state["next"] = now + 0.1
        return now if b.stored(prefix) >= b.n else None

    return Consumer(
        [proc], done, lambda: b.stored(prefix), client_ids=[f"{OWN}bench-{prefix}telegraf"]
    )


def bare(b: Bench, prefix: str, c_client: bool, count: int | None = None) -> Consumer:
    """A counting subscriber; `count` 0: subscribe, then leave (the session stays)."""
    client_id = f"{OWN}bench-{prefix}sub"
    expected = b.n if count is None else count
    if c_client:
        argv = [
            "/usr/bin/time", "-f", "cpu %U %S",  # its CPU, written when it exits
            procs.find_binary("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(b.mq.port),
            "-u", acl_model.INGEST_USERNAME, "-P", b.mq.ingest_password, "-q", "1",
            "-c", "-i", client_id, "-t", "live/+/+", "-C", str(expected), "-F", "%t",
        ]  # fmt: skip

    else:
        argv = [sys.executable, "-m", "bench.bare_subscriber", str(b.mq.port), "-", client_id,
                str(expected)]  # fmt: skip
    proc = procs.Proc(
        f"sub-{prefix}",
        argv,
        b.workdir,
        env={"BENCH_SUB_PASSWORD": b.mq.ingest_password, "PYTHONPATH": str(procs.REPO_ROOT)},
    )
    if not c_client:
        proc.ready = lambda: "subscribed" in proc.log_text() or not proc.running()

    def done() -> float | None:
        if proc.running():
            return None
        if c_client:
            return time.time()  # polled every 20 ms
        return float(json.loads(proc.log_text().strip().splitlines()[-1])["last_at"])

    def delivered() -> int:
        lines = proc.log_text().strip().splitlines()
        if c_client:
            return sum(1 for line in lines if line.startswith("live/"))
        return int(json.loads(lines[-1])["count"])

    def cpu() -> float:
        """What the process reported (it has exited), all of its life."""
        lines = proc.log_text().strip().splitlines()
        if c_client:
            _, user, system = next(x for x in reversed(lines) if x.startswith("cpu ")).split()
            return float(user) + float(system)
        return float(json.loads(lines[-1])["cpu_s"])

    return Consumer([proc], done, delivered, exited_cpu=cpu, client_ids=[client_id])


def consumer(b: Bench, name: str, prefix: str) -> Consumer:
    if name.startswith("workers-"):
        return workers(b, int(name.split("-")[1]), prefix)
    if name == "telegraf":
        return telegraf(b, prefix)
    return bare(b, prefix, c_client=name == "mosquitto_sub")


# ---------------------------------------------------------------- runs


def clear_sessions(b: Bench, client_ids: list[str]) -> None:
    """Connect as each consumer with a clean start and no expiry: the broker forgets its
    session, which would otherwise keep queueing every later run's readings."""
    for client_id in client_ids:
        client = testing.mqtt.client(
            acl_model.INGEST_USERNAME, b.mq.ingest_password, client_id=client_id
        )
        props = testing.mqtt.session_expiry(0)
        client.connect("127.0.0.1", b.mq.port, clean_start=True, properties=props)
        client.loop_start()
        time.sleep(0.1)
        client.disconnect()
        client.loop_stop()


def wait_done(c: Consumer, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while True:
        at = c.done()
        if at is not None:
            return at
        if time.monotonic() > deadline:
            raise TimeoutError("consumer not done in time")
        time.sleep(c.next_poll_s())


def run(b: Bench, name: str, mode: str) -> dict[str, Any]:
    prefix = b.prefix(name)
    c = consumer(b, name, prefix)
    startup_cpu: dict[str, float] = {}
    startup_s = None
    broker_cpu, store_cpu = b.cpu_of(b.mq.proc), b.cpu_of(b.store.proc)
    try:
        if mode == "backlog":
            # Subscribe once (persistent session), go away, let the broker queue everything.
            if name == "paho":
                first = subprocess.run(
                    [*c.procs_[0].argv[:-1], "0"],
                    env={**os.environ, **c.procs_[0].env},
                    capture_output=True,
                    timeout=30,
                )
                assert first.returncode == 0, first.stderr
            else:
                launched = c.start()
                if name in ("telegraf", "mosquitto_sub"):
                    time.sleep(1.0)  # subscribed by then (no readiness signal)
                else:
                    startup_s = round(time.time() - launched, 2)
                startup_cpu = dict(c.ready_cpu)
                c.kill()  # the session stays, with its subscription (a shared one too)
            pub = b.publish(prefix)
            start = c.start(count_from_launch=True)
        else:
            c.start()
            if name in ("telegraf", "mosquitto_sub"):
                time.sleep(1.0)
            pub = b.publish(prefix)
            start = pub["started_at"]
        done = wait_done(c)
        cpu = {k: v - startup_cpu.get(k, 0.0) for k, v in c.cpu().items()}
        cpu["mosquitto"] = b.cpu_of(b.mq.proc) - broker_cpu
        cpu["influxd"] = b.cpu_of(b.store.proc) - store_cpu
        load = os.getloadavg()[0]
        time.sleep(0.5)  # the last points reach the store
        delivered = c.delivered()
    finally:
        c.stop()
        clear_sessions(b, c.client_ids)
    return {
        "consumer": name,
        "mode": mode,
        "readings_per_s": round(pub["published"] / (done - start), 1),
        "lost": int(pub["published"] - delivered),
        # backlog: from launch, minus the CPU the same processes took to start and subscribe
        "cpu_s_per_10k": {k: round(v / b.n * 10_000, 3) for k, v in cpu.items()},
        "startup_s": startup_s,
        "publisher_per_s": pub["publisher_per_s"],
        "load_average_1m": round(load, 2),
    }


def main() -> int:
    n = int(os.environ.get("BENCH_INGEST_READINGS", "200000"))
    devices = int(os.environ.get("BENCH_INGEST_DEVICES", "200"))
    rounds = int(os.environ.get("BENCH_INGEST_ROUNDS", "2"))
    counts = [int(x) for x in os.environ.get("BENCH_INGEST_WORKERS", "1,2").split(",")]
    names = [f"workers-{k}" for k in counts] + ["paho", "mosquitto_sub"]
    skipped = None
    if TELEGRAF.exists():
        names.insert(len(counts), "telegraf")
    else:
        skipped = "telegraf not built: BOOTSTRAP_TELEGRAF=1 scripts/bootstrap.sh"
    only = os.environ.get("BENCH_INGEST_CONSUMERS")  # e.g. "workers-2,telegraf"
    if only:
        names = [x for x in names if x in only.split(",")]
    pub_password = secrets.token_urlsafe(12)
    results: list[dict[str, Any]] = []
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
        b = Bench(workdir, mq, store, pub_password, n // devices * devices, devices)
        try:
            alone = b.publish(b.prefix("alone"))  # nobody subscribed: the publisher's ceiling
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for mode in ("live", "backlog"):
                    for name in order:
                        result = run(b, name, mode)
                        print(json.dumps(result), flush=True)
                        results.append(result)
        finally:
            store.proc.stop()
            mq.proc.stop()
    best: dict[str, dict[str, Any]] = {}
    for mode in ("live", "backlog"):
        for name in names:
            runs = [x for x in results if x["consumer"] == name and x["mode"] == mode]
            top = max(runs, key=lambda x: x["readings_per_s"])
            best[f"{name} {mode}"] = {
                "readings_per_s": top["readings_per_s"],
                "lost": sum(x["lost"] for x in runs),
                "cpu_s_per_10k": top["cpu_s_per_10k"],
                "load_average_1m": top["load_average_1m"],
                "rounds": [x["readings_per_s"] for x in runs],
            }

    def ratio(a: str, c: str) -> float | None:
        if a not in best or c not in best:
            return None
        return round(float(best[a]["readings_per_s"]) / float(best[c]["readings_per_s"]), 3)

    worker_cpu = best.get("workers-1 backlog", {}).get("cpu_s_per_10k", {})
    figures = {
        "readings": b.n,
        "devices": devices,
        "rounds": rounds,
        "publisher_alone_per_s": alone["publisher_per_s"],
        "publisher_cpu_s_per_10k": alone["publisher_cpu_s_per_10k"],
        "best": best,
        "ratio_2_workers_vs_telegraf_live": ratio("workers-2 live", "telegraf live"),
        "ratio_2_workers_vs_telegraf_backlog": ratio("workers-2 backlog", "telegraf backlog"),
        "ratio_1_worker_vs_paho_backlog": ratio("workers-1 backlog", "paho backlog"),
        # the worker process itself (the broker's and the store's CPU are listed in `best`)
        "one_worker_cpu_s_per_10k": next(
            (v for k, v in worker_cpu.items() if k.startswith("ingest-")), None
        ),
        "lost": sum(x["lost"] for x in results if x["consumer"].startswith("workers")),
        "skipped": skipped,
        "cpus": os.cpu_count(),
        "target": "2 workers >= 1.0x Telegraf (live and backlog), 0 lost; "
        "one worker <= 0.5 CPU-s per 10k readings",
    }
    write_result("ingest", figures)
    return 0 if figures["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
