"""`make run`'s runner: everything comes up, averages flow, Ctrl-C stops it all, data survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from stack import influxdb
from stack.mqtt_probe import MqttProbe
from stack.secrets import read_env_file
from testing import procs
from testing.influx import Reader

# Scraped beside our own processes: the node, the stores, the faucet, Mosquitto (its exporter).
STORES = {"hornet": 1, "influxdb": 1, "ferretdb": 1, "faucet": 1, "mosquitto": 1}


def _stack_env(data_dir: Path) -> dict[str, str]:
    names = [
        "MQTT_PORT", "MQTT_TLS_PORT", "MQTT_WS_PORT", "API_PORT", "FERRETDB_PORT",
        "FERRETDB_DEBUG_PORT", "INFLUX_PORT", "INFLUX_RPC_PORT", "DEVNET_PORT", "FAUCET_PORT",
        "INGEST_METRICS_PORT", "DEVNET_ZMQ_PORT", "PROMETHEUS_PORT", "DEVNET_PROMETHEUS_PORT",
        "BROKER_METRICS_PORT",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("MONGO_URL", "BROKER_ADMIN_TOKEN")}
    env.update({name: str(procs.free_port()) for name in names})
    env["IOT_DATA_DIR"] = str(data_dir)
    env["DEVNET_MILESTONE_INTERVAL"] = "1"
    # The tests' coordinator tree (built once, shared) instead of make run's deeper own one.
    env["DEVNET_MERKLE_DEPTH"] = str(procs.TEST_MERKLE_DEPTH)
    env["DEVNET_MERKLE_CACHE"] = str(procs.TEST_MERKLE_CACHE)
    env["DEPOSIT_POOL_TARGET"] = "6"
    return env


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "stack", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _influx(env: dict[str, str], data_dir: Path) -> Reader:
    """The local InfluxDB, read as its admin with the password make run generated."""
    password = read_env_file(data_dir / "secrets.env")["INFLUX_ADMIN_PASSWORD"]
    return Reader(f"http://127.0.0.1:{env['INFLUX_PORT']}", f"iot-admin:{password}")


def _stored_readings(env: dict[str, str]) -> int:
    reader = _influx(env, Path(env["IOT_DATA_DIR"]))
    return len(reader.points("reading", "value", device="plug-1", sensor="power"))


def _products(env: dict[str, str]) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{env['API_PORT']}/api/products") as r:
        products: list[dict[str, object]] = json.loads(r.read())
    return products


def _stop(runner: subprocess.Popen[bytes], env: dict[str, str]) -> None:
    runner.send_signal(signal.SIGINT)  # what Ctrl-C delivers
    assert runner.wait(60) == 0
    for name in (
        "MQTT_PORT", "API_PORT", "FERRETDB_PORT", "INFLUX_PORT", "DEVNET_PORT", "FAUCET_PORT",
        "PROMETHEUS_PORT",
    ):  # fmt: skip
        assert not procs.port_open(int(env[name])), f"{name} still open after Ctrl-C"


def _scraped(env: dict[str, str]) -> dict[str, list[str]] | None:
    """Prometheus's targets: job -> the health of each of its targets."""
    url = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}/api/v1/targets"
    try:
        active = httpx.get(url, timeout=5).json()["data"]["activeTargets"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    jobs: dict[str, list[str]] = {}
    for target in active:
        jobs.setdefault(target["labels"]["job"], []).append(target["health"])
    return jobs


def _alert_rules(env: dict[str, str]) -> set[str]:
    url = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}/api/v1/rules"
    groups = httpx.get(url, timeout=5).json()["data"]["groups"]
    return {rule["name"] for group in groups for rule in group["rules"]}


def _query(env: dict[str, str], expr: str) -> list[float]:
    url = f"http://127.0.0.1:{env['PROMETHEUS_PORT']}/api/v1/query"
    try:
        result = httpx.get(url, params={"query": expr}, timeout=5).json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):
        return []
    return [float(r["value"][1]) for r in result]


def _wait_scraped(env: dict[str, str], want: dict[str, int]) -> None:
    """Every process of the run is scraped and up (`want`: job -> how many targets), and the
    $SYS exporter reads the broker (its login works: broker_auth made it with the password)."""
    procs.wait_until(
        lambda: (_scraped(env) or {}) == {job: ["up"] * n for job, n in want.items()},
        60,
        f"Prometheus scraping {want}",
    )
    procs.wait_until(
        lambda: (
            _query(env, "mosquitto_broker_connected") == [1.0]
            and (_query(env, "mosquitto_clients_connected") or [0.0])[0] >= 2
        ),
        60,
        "Mosquitto's $SYS figures in Prometheus",
    )
    assert {"DepositPoolEmpty", "NoPaymentsLeader", "ProcessDown", "BrokerDown"} <= _alert_rules(
        env
    )


def test_make_run_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    env = _stack_env(tmp_path / "data")
    log = tmp_path / "run.log"
    runner = _start(env, log)
    try:
        procs.wait_until(
            lambda: procs.http_ok(f"http://127.0.0.1:{env['API_PORT']}/healthz"), 120, "healthz"
        )
        # The demo seed is created (right after start-up) and the plug's average is published.
        procs.wait_until(lambda: bool(_products(env)), 30, "the demo product")
        product = _products(env)[0]
        assert {"id": "plug-1-live", "price_iota_per_hour": 500}.items() <= product.items()
        probe = MqttProbe(int(env["MQTT_PORT"]))
        probe.connect()
        assert probe.subscribe("avg/1m/plug-1/power")
        msg = probe.next_message(30)
        probe.close()
        assert msg is not None, log.read_text()[-3000:]
        assert json.loads(msg.payload)["window"] == "1m"
        procs.wait_until(lambda: _stored_readings(env) > 0, 30, "raw readings in the store")
        # The services hold a token that may write the database and nothing else.
        writer = read_env_file(tmp_path / "data" / "secrets.env")["INFLUX_TOKEN"]
        refused = Reader(f"http://127.0.0.1:{env['INFLUX_PORT']}", writer)
        with pytest.raises(RuntimeError, match="requires READ"):
            refused.points("reading", "value")
        # broker_auth's reader (the seller's device list) may read.
        reader = read_env_file(tmp_path / "data" / "secrets.env")["INFLUX_READ_TOKEN"]
        assert Reader(f"http://127.0.0.1:{env['INFLUX_PORT']}", reader).points(
            "reading", "value", device="plug-1"
        )
        assert "IoT telemetry broker is up" in log.read_text()
        # Every process that serves metrics, the node and the stores among them.
        _wait_scraped(env, {"broker_auth": 1, "ingest": 1, "prometheus": 1, **STORES})
        # A calm console: no process's routine lines, each in its own log file instead.
        console = log.read_text()
        assert " INFO " not in console and " CRIT " not in console, console[-3000:]
        assert " ERROR " not in console, console[-3000:]  # a clean start has no error
        logs = tmp_path / "data" / "logs"
        for name in ("hornet", "mosquitto", "broker_auth", "ingest", "supervisord"):
            assert (logs / f"{name}.log").stat().st_size > 0, name
        assert "milestone" in (logs / "hornet.log").read_text().lower()
    finally:
        if runner.poll() is None:
            _stop(runner, env)
    first = _stored_readings_after_restart(env, log)
    assert first > 0
    secrets_file = tmp_path / "data" / "secrets.env"
    assert secrets_file.stat().st_mode & 0o077 == 0
    # No secret reaches the console output.
    token = next(
        line.split("=", 1)[1]
        for line in secrets_file.read_text().splitlines()
        if line.startswith("BROKER_ADMIN_TOKEN=")
    )
    assert token not in log.read_text()


def _leaders(api_ports: list[int]) -> list[bool] | None:
    try:
        return [
            bool(httpx.get(f"http://127.0.0.1:{p}/healthz", timeout=5).json()["leader"])
            for p in api_ports
        ]
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def _stored_readings_after_restart(env: dict[str, str], log: Path) -> int:
    """A second run keeps the data of the first; it runs scaled out: two ingest workers behind
    the averager, two broker_auth replicas of which one leads."""
    scaled = {
        **env,
        "INGEST_WORKERS": "2",
        "BROKER_AUTH_REPLICAS": "2",
        "INGEST_AVERAGER_METRICS_PORT": str(procs.free_port()),
    }
    runner = _start(scaled, log)
    try:
        procs.wait_until(
            lambda: influxdb.ping(f"http://127.0.0.1:{env['INFLUX_PORT']}"), 60, "store"
        )
        deadline = time.monotonic() + 30
        count = 0
        while time.monotonic() < deadline and count == 0:
            try:
                count = _stored_readings(env)
            except (OSError, RuntimeError, httpx.HTTPError):  # still provisioning
                time.sleep(0.5)
        api = int(env["API_PORT"])
        procs.wait_until(
            lambda: sorted(_leaders([api, api + 1]) or []) == [False, True], 60, "one leader"
        )
        probe = MqttProbe(int(env["MQTT_PORT"]))
        probe.connect()
        assert probe.subscribe("avg/1m/plug-1/power")
        fresh = None
        started = time.time()
        while fresh is None and time.time() - started < 30:
            msg = probe.next_message(30)
            assert msg is not None, log.read_text()[-3000:]
            if not msg.retain:  # published by this run's averager, not the retained one
                fresh = json.loads(msg.payload)
        probe.close()
        assert fresh is not None and fresh["count"] > 1
        logs = Path(env["IOT_DATA_DIR"]) / "logs"
        for name in ("ingest-0", "ingest-1", "averager", "broker_auth-0", "broker_auth-1"):
            assert (logs / f"{name}.log").stat().st_size > 0, name
        _wait_scraped(
            scaled,
            {"broker_auth": 2, "ingest": 2, "averager": 1, "prometheus": 1, **STORES},
        )
        return count
    finally:
        _stop(runner, scaled)
