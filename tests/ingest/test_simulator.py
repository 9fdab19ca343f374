"""The smart-plug simulator: plausible values, counts, and retries while the broker is down."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

import testing.mqtt
from broker_auth.broker import acl_model
from broker_auth.broker.acl_model import Client
from simulator.plug import SmartPlug
from testing import procs
from testing.procs import wait_for
from tests.conftest import MosquittoFactory, device_password
from tests.ingest.conftest import unique


def test_plug_draws_hundreds_of_watts_with_on_off_periods() -> None:
    plug = SmartPlug(random.Random(3), now=0.0, mean_on_s=20, mean_off_s=10)
    samples = [plug.sample(t * 0.5) for t in range(4000)]  # 2 Hz for ~33 min
    on = [w for w in samples if w > 20]
    off = [w for w in samples if w <= 20]
    assert on and off
    assert all(0 <= w < 3 for w in off)
    assert 100 < sorted(on)[len(on) // 2] < 1000
    assert max(on) < 900 * 1.1 * 1.1 * 1.8
    assert len(set(on)) > len(on) // 2  # noisy, not constant


class LiveCollector:
    """A persistent-session reader of live/# (the ingest account), collecting timestamps."""

    def __init__(self, broker: procs.MosquittoHandle, topic: str) -> None:
        self.ts: set[float] = set()
        self._lock = threading.Lock()
        self.client = testing.mqtt.client(
            acl_model.INGEST_USERNAME, broker.ingest_password, tag="collector"
        )
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        self.subscribed = testing.mqtt.subscribe_on_connect(self.client, topic, qos=1)
        self.client.on_message = self._on_message
        props = testing.mqtt.session_expiry(300)
        self.client.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.ts.add(json.loads(msg.payload)["ts"])

    def count(self) -> int:
        with self._lock:
            return len(self.ts)

    def timestamps(self) -> list[float]:
        with self._lock:
            return sorted(self.ts)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sim_argv(port: int, sensor: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "simulator",
        "--port",
        str(port),
        "--device",
        "dev-a",
        "--sensor",
        sensor,
        "--json",
        *extra,
    ]


def test_publishes_count_as_the_device_with_a_password_file(
    mosquitto: procs.MosquittoHandle, tmp_path: Path
) -> None:
    sensor = unique("sim")
    collector = LiveCollector(mosquitto, f"live/dev-a/{sensor}")
    try:
        pw = tmp_path / "password"
        pw.write_text(device_password("dev-a") + "\n")
        done = subprocess.run(
            sim_argv(
                mosquitto.port,
                sensor,
                "--rate",
                "50",
                "--count",
                "30",
                "--password-file",
                str(pw),
                "--tally-seconds",
            ),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["published"] == 30 and summary["unacked"] == 0
        assert summary["elapsed_s"] > 0.5  # paced at 50 Hz, not a burst
        # The tally of acknowledged readings by the second of their ts: all 30, in the run.
        tally = {int(k): v for k, v in summary["acked_by_second"].items()}
        assert sum(tally.values()) == 30
        assert int(summary["started_at"]) <= min(tally) <= max(tally) <= summary["finished_at"]
        wait_for(lambda: collector.count() == 30, 10, "30 readings received", 0.2)
        # Each reading's ts falls in the second it was tallied under.
        seconds = [int(ts) for ts in collector.timestamps()]
        assert {s: seconds.count(s) for s in set(seconds)} == tally
    finally:
        collector.close()


def test_keeps_and_resends_readings_while_the_broker_is_down(
    mosquitto_factory: MosquittoFactory,
) -> None:
    broker = mosquitto_factory(
        unique("sim-broker"),
        extra_clients=[
            Client(acl_model.device_username("dev-a"), device_password("dev-a"), ("device.dev-a",))
        ],
        extra_roles=[acl_model.device_role("dev-a")],
    )
    sensor = unique("simdown")
    collector = LiveCollector(broker, f"live/dev-a/{sensor}")
    sim = subprocess.Popen(
        sim_argv(
            broker.port, sensor, "--rate", "50", "--count", "200", "--username", "device.dev-a"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SIM_PASSWORD": device_password("dev-a")},
    )
    try:
        wait_for(lambda: collector.count() >= 50, 15, "first readings", 0.2)
        broker.proc.stop()  # graceful: Mosquitto saves the collector's session
        time.sleep(1.5)  # the simulator keeps sampling into its bounded queue
        broker.proc.start()
        out, err = sim.communicate(timeout=40)
        assert sim.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["published"] == 200
        assert "disconnected" in err
        wait_for(lambda: collector.count() == 200, 15, "all 200 readings received", 0.2)
    finally:
        if sim.poll() is None:
            sim.kill()
            sim.wait()
        collector.close()
        broker.proc.stop()
