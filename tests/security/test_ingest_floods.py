"""Floods of hostile MQTT traffic do not grow the ingest worker's memory without bound.

A compromised or buggy client allowed to publish anywhere under `live/#` (made with the broker's
extra clients/roles, as no real device may) sends, on one connection: readings from thousands of
distinct device ids, a storm of points into one series, oversized payloads, malformed payloads
(bad UTF-8, bad JSON, JSON nested 1500 deep, NaN) and topics with 30 000-character levels. The
worker runs with small caps (INGEST_MAX_SERIES, INGEST_MAX_POINTS_PER_SERIES,
INGEST_RECEIVE_MAXIMUM). Its resident memory (VmRSS) is read after a
warm-up flood that already fills the caps and after two floods of different sizes: growth
between them must stay small, far below what per-device state would cost, and a real device's
readings must still be stored after each flood.
"""

from __future__ import annotations

import json
import secrets
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import testing.mqtt
from broker_auth.broker import acl_model
from broker_auth.broker.acl_model import Acl, Client, Role
from ingest.averages import Averages
from ingest.parsing import Reading
from ingest.settings import Window
from testing import procs
from testing.procs import wait_for
from tests.conftest import MosquittoFactory, Store
from tests.ingest.conftest import Worker, stored_points
from tests.security.conftest import REPORTS, start_ingest

MAX_SERIES = 300
MAX_POINTS = 200
FLOOD_SIZES = (5_000, 15_000)  # distinct device ids per flood
WARM_UP = 1_000
LONG_LEVEL = 30_000
FLOODER, FLOODER_PW = "flooder", secrets.token_urlsafe(12)
GOOD = "good-1"
MiB = 1024 * 1024


@dataclass
class Flood:
    broker: procs.MosquittoHandle
    worker: Worker
    store: Store
    client: mqtt.Client
    sent: int = 0

    def publish(self, topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        self.sent += 1
        return self.client.publish(topic, payload, qos=1)

    def rss(self) -> int:
        assert self.worker.proc.popen is not None and self.worker.proc.running()
        status = Path(f"/proc/{self.worker.proc.popen.pid}/status").read_text()
        (line,) = [x for x in status.splitlines() if x.startswith("VmRSS:")]
        return int(line.split()[1]) * 1024


@pytest.fixture(scope="module")
def flood(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_factory: MosquittoFactory, influx: Store
) -> Iterator[Flood]:
    broker = mosquitto_factory(
        "flood-mosquitto",
        extra_clients=[
            Client(FLOODER, FLOODER_PW, ("flooder",)),
            Client(acl_model.device_username(GOOD), "pw-good", (f"device.{GOOD}",)),
        ],
        extra_roles=[
            Role("flooder", (Acl("publishClientSend", "live/#"),), "tests only"),
            acl_model.device_role(GOOD),
        ],
    )
    worker = start_ingest(
        tmp_path_factory.mktemp("flood-ingest"),
        broker,
        influx,
        INGEST_MAX_SERIES=str(MAX_SERIES),
        INGEST_MAX_POINTS_PER_SERIES=str(MAX_POINTS),
        INGEST_RECEIVE_MAXIMUM="1000",
        INGEST_BATCH_SIZE="500",
        INGEST_WINDOWS="1m",
        INGEST_PUBLISH_INTERVAL_S="1",
    )
    client = testing.mqtt.client(FLOODER, FLOODER_PW, client_id=f"{FLOODER}:flood")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        yield Flood(broker, worker, influx, client)
    finally:
        client.disconnect()
        client.loop_stop()
        worker.proc.stop()


def hostile_traffic(tag: str, size: int) -> Iterator[tuple[str, bytes]]:
    """`size` distinct device ids, `size` points into one series, and `size // 10` each of
    oversized payloads, malformed payloads and topics with a 30 000-character level."""
    now_ms = int(time.time() * 1000)
    for i in range(size):
        yield f"live/{tag}-{i}/power", f"{i % 1000}.5".encode()
        yield f"live/hot-{tag}/power", json.dumps({"value": i, "ts": now_ms - i}).encode()
    for i in range(size // 10):
        yield f"live/big-{tag}/power", b"7" * 20_000
        yield f"live/{'x' * LONG_LEVEL}{tag}{i}/power", b"1.5"
        yield (
            f"live/bad-{tag}/power",
            [
                b"\xff\xfe\xfd",
                b"{not json",
                b'{"value":' + b"[" * 1500 + b"]" * 1500 + b"}",
                b"NaN",
                secrets.token_bytes(64),
            ][i % 5],
        )


def good_reading(flood: Flood, value: float) -> None:
    """A real device's reading: it must reach the store after any flood."""
    username = acl_model.device_username(GOOD)
    device = testing.mqtt.client(username, "pw-good", client_id=f"{username}:good")
    device.connect("127.0.0.1", flood.broker.port)
    device.loop_start()
    device.publish(f"live/{GOOD}/power", str(value), qos=1).wait_for_publish(10)
    device.disconnect()
    device.loop_stop()
    flood.sent += 1
    wait_for(
        lambda: value in [v for _, v in stored_points(flood.store, GOOD, "power")],
        30,
        f"the good reading {value} in the store",
        0.2,
    )


def run_flood(flood: Flood, tag: str, size: int) -> float:
    started = time.monotonic()
    infos = [flood.publish(topic, payload) for topic, payload in hostile_traffic(tag, size)]
    for info in infos:
        info.wait_for_publish(60)
    worker = flood.worker
    wait_for(
        lambda: (
            worker.metric("ingest_readings_received_total") >= flood.sent
            and worker.metric("ingest_buffer_depth") == 0
        ),
        180,
        f"the worker to take the {tag} flood",
        0.2,
    )
    time.sleep(1.5)  # one averages publication after the flood
    assert worker.metric("ingest_series") <= MAX_SERIES
    return time.monotonic() - started


def per_series_bytes() -> float:
    """What one more (device, sensor) costs in the averages when nothing bounds them."""
    averages = Averages((Window("1m", 60.0),), max_series=10**9, max_points=MAX_POINTS)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(5_000):
        averages.add(Reading(f"flood-{i}", "power", 1.5, 1.7e9 + i))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / 5_000


def test_floods_do_not_grow_the_worker_without_bound(flood: Flood) -> None:
    worker = flood.worker
    good_reading(flood, 11.25)
    at_start = flood.rss()
    run_flood(flood, "warm", WARM_UP)  # fills the series cap and the buffers once
    rss = {"after warm-up": flood.rss()}
    seconds = {}
    for n, size in enumerate(FLOOD_SIZES):
        seconds[size] = run_flood(flood, f"f{n}", size)
        rss[f"after {size} ids"] = flood.rss()
        good_reading(flood, 21.25 + n)  # still stored
    assert worker.proc.running()

    flooded = WARM_UP + sum(FLOOD_SIZES)
    rejected = {
        reason: worker.rejected(reason)
        for reason in ("oversized", "malformed_topic", "invalid_utf8", "invalid_json")
    }
    assert rejected["oversized"] == flooded // 10
    assert rejected["malformed_topic"] == flooded // 10
    assert rejected["invalid_json"] >= 2 * (flooded // 50)  # "{not json" and the deep one
    assert worker.metric("ingest_series") <= MAX_SERIES

    unbounded = per_series_bytes()
    base = rss["after warm-up"]
    small, large = (rss[f"after {size} ids"] for size in FLOOD_SIZES)
    figures = "\n".join(
        f"  {name:<18} VmRSS {value / MiB:7.1f} MiB ({(value - base) / MiB:+.1f})"
        for name, value in rss.items()
    )
    report = (
        f"ingest worker memory under floods (INGEST_MAX_SERIES={MAX_SERIES}, "
        f"INGEST_MAX_POINTS_PER_SERIES={MAX_POINTS}):\n"
        f"  {'at start':<18} VmRSS {at_start / MiB:7.1f} MiB\n{figures}\n"
        f"  flood time {', '.join(f'{k} ids {v:.1f} s' for k, v in seconds.items())}; "
        f"rejected {rejected}\n"
        f"  unbounded state would cost {unbounded:.0f} B per device id: "
        f"{FLOOD_SIZES[1] * unbounded / MiB:.1f} MiB for the second flood alone"
    )
    REPORTS.append(report)
    print("\n" + report)
    # Three times the ids cost no more than the first flood did, and far less than per-id state.
    assert large - small < 4 * MiB, report
    assert large - base < 8 * MiB, report
    assert large - small < 0.25 * FLOOD_SIZES[1] * unbounded, report
