"""What dynamic security costs the ingest pipeline: the same load with and without the plugin.

Two brokers, each fresh per repetition, rendered from the same template
(mosquitto/mosquitto.conf.template via stack.mosquitto_conf):
(a) dynsec: as configured (the plugin, bootstrapped with the service accounts and a publisher
    whose role allows live/#; every PUBLISH and every delivery is checked against its ACLs);
(b) anonymous: the very same file minus the `plugin`/`plugin_opt_*` lines (allow_anonymous is
    already true), so nothing checks credentials or ACLs.
Each run is bench/pipeline.py's run unchanged: `iot-sim` publishing a fixed number of
readings flat out (QoS 1, many devices on one connection) while the ingest worker, with its
default settings, stores them in a fresh InfluxDB; throughput = readings / (worker's
last store write - first publish). Repetitions alternate the order (ab, ba, ab, ...); the
figures are medians. Mosquitto's own CPU time per reading is reported too (the two password
checks at connection excluded): the worker is the bottleneck, so the broker's share shows the
plugin's cost more directly.

Environment: BENCH_ACL_READINGS (default 30000), BENCH_ACL_DEVICES (default 200),
BENCH_ACL_REPEATS (default 3).
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import write_result
from bench.pipeline import run_pipeline
from deploy.tls import ensure_tls_files
from stack import mosquitto_conf
from stack.mqtt_probe import MqttProbe
from testing import procs

TARGET_RATIO = 0.9


def anonymous_broker(workdir: Path) -> procs.MosquittoHandle:
    """The configured broker without the dynamic-security plugin (anyone may do anything)."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = mosquitto_conf.MosquittoPorts(procs.free_port(), procs.free_port(), procs.free_port())
    tls = ensure_tls_files(workdir / "tls")
    configured = mosquitto_conf.render(workdir, workdir / "unused.json", tls, ports)
    lines = [line for line in configured.splitlines() if not line.strip().startswith("plugin")]
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        "# bench/acl.py: mosquitto.conf.template without the dynamic-security plugin\n"
        + "\n".join(lines)
        + "\n"
    )
    proc = procs.Proc(
        "mosquitto",
        [procs.find_binary("mosquitto"), "-c", str(conf)],
        workdir,
        ready=lambda: procs.port_open(ports.mqtt),
    ).start()
    # The clients keep their usernames and passwords: without a plugin Mosquitto ignores them.
    unused = secrets.token_urlsafe(12)
    return procs.MosquittoHandle(proc, ports.mqtt, ports.tls, ports.websocket, tls, unused, unused)


def dynsec_broker(workdir: Path, publisher_password: str) -> procs.MosquittoHandle:
    return procs.mosquitto(
        workdir,
        admin_password=secrets.token_urlsafe(12),
        ingest_password=secrets.token_urlsafe(12),
        extra_clients=[harness.publisher_client(publisher_password)],
        extra_roles=[harness.publisher_role()],
    )


def connect_twice(broker: procs.MosquittoHandle, publisher_password: str) -> None:
    for username, password in (
        (harness.PUBLISHER, publisher_password),
        ("svc.ingest", broker.ingest_password),
    ):
        probe = MqttProbe(broker.port, username, password)
        if not probe.connect():
            raise RuntimeError(f"{username} cannot connect")
        probe.close()


def run_once(workdir: Path, variant: str, n: int, devices: int) -> dict[str, Any]:
    publisher_password = secrets.token_urlsafe(12)
    if variant == "dynsec":
        broker = dynsec_broker(workdir / "mosquitto", publisher_password)
    else:
        broker = anonymous_broker(workdir / "mosquitto")
    store: procs.InfluxHandle | None = None
    try:
        store = procs.influx(workdir / "influxdb")
        broker_pid = harness.pid_of(broker.proc)
        cpu_start = harness.proc_cpu_seconds(broker_pid)
        connect_twice(broker, publisher_password)
        cpu_before = harness.proc_cpu_seconds(broker_pid)
        # The run connects the same two accounts: leave their password checks out of the
        # per-reading broker cost (PBKDF2 with 101 000 iterations each, under dynsec).
        connect_cost = cpu_before - cpu_start
        result = run_pipeline(
            workdir=workdir,
            mq=broker,
            store=store,
            pub_password=publisher_password,
            n=n,
            devices=devices,
            profile_to=None,
            prefix="acl-",
        )
        broker_cpu = harness.proc_cpu_seconds(broker_pid) - cpu_before - connect_cost
    finally:
        if store is not None:
            store.proc.stop()
        broker.proc.stop()
    return {
        "variant": variant,
        "readings_per_s": result["readings_per_s"],
        "publisher_send_rate_per_s": result["publisher_send_rate_per_s"],
        "lost": result["lost"],
        "broker_cpu_us_per_reading": round(1e6 * broker_cpu / result["published"], 1),
    }


def main() -> int:
    n = int(os.environ.get("BENCH_ACL_READINGS", "30000"))
    devices = int(os.environ.get("BENCH_ACL_DEVICES", "200"))
    repeats = int(os.environ.get("BENCH_ACL_REPEATS", "3"))
    load = harness.LoadMonitor().start()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-acl-") as tmp:
        for rep in range(repeats):
            order = ("dynsec", "anonymous") if rep % 2 == 0 else ("anonymous", "dynsec")
            for variant in order:
                run = run_once(Path(tmp) / f"{rep}-{variant}", variant, n, devices)
                print(f"  rep {rep} {variant}: {run}", flush=True)
                runs.append({"repeat": rep, **run})

    def median(variant: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs if r["variant"] == variant))

    dynsec = median("dynsec", "readings_per_s")
    anonymous = median("anonymous", "readings_per_s")
    ratio = dynsec / anonymous
    per_repeat = []
    for rep in range(repeats):
        pair = {r["variant"]: r["readings_per_s"] for r in runs if r["repeat"] == rep}
        per_repeat.append(round(pair["dynsec"] / pair["anonymous"], 3))
    figures = {
        "readings_per_run": n,
        "devices": devices,
        "repeats": repeats,
        "dynsec_readings_per_s": dynsec,
        "anonymous_readings_per_s": anonymous,
        "ratio": round(ratio, 3),
        "ratio_per_repeat": per_repeat,
        "broker_cpu_us_per_reading": {
            "dynsec": median("dynsec", "broker_cpu_us_per_reading"),
            "anonymous": median("anonymous", "broker_cpu_us_per_reading"),
        },
        "lost_total": sum(r["lost"] for r in runs),
        "runs": runs,
        "target": f"ratio >= {TARGET_RATIO}",
        "target_met": ratio >= TARGET_RATIO,
        "load": load.stop(),
    }
    write_result("acl", figures)
    return 0 if figures["lost_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
