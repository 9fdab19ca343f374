"""A small stack whose InfluxDB has received readings, averages, payments and grants.

Its own InfluxDB (so the business panels' totals are exactly this module's), its own broker,
broker_auth on the session FerretDB and devnet, and an ingest worker. A device publishes known
readings; a buyer orders and pays on the devnet, so broker_auth writes the payment (seen
unconfirmed, then confirmed), the grant and the active-grant counts.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

import testing.mqtt
from testing import procs
from testing.broker_auth import AuthStack, start_auth_stack
from testing.procs import wait_for
from testing.prometheus import Prometheus, start_prometheus
from testing.scrape import scrape_metrics
from tests.conftest import Mongo, MosquittoFactory
from tests.devnet_fixture import pay_from_fresh_seed
from tests.ingest.conftest import Worker, ingest_worker

DEVICE = "dash-plug"
SENSOR = "power"
PRODUCT = "dash-live"
PRICE = 3600  # iota per hour: 1 iota buys 1 s
HOURS = 0.1  # 360 iota, 360 s: the grant still runs while the panels are queried
READINGS = [100.0 + 2.5 * i for i in range(40)]


@dataclass
class DashboardStack:
    store: procs.InfluxHandle
    auth: AuthStack
    worker: Worker
    started_at: float
    readings: list[tuple[int, float]]  # (ts ms, value) published by the device
    paid_iota: int
    grant_seconds: float
    facts: dict[str, Any] = field(default_factory=dict)
    # Debian's Prometheus, scraping broker_auth and the worker every second from the start.
    prometheus: Prometheus | None = None

    def auth_metrics(self) -> dict[str, float]:
        return scrape_metrics(f"{self.auth.api_url}/metrics", 5)


def _publish_garbage(broker: procs.MosquittoHandle, auth: AuthStack, count: int) -> None:
    """Readings the worker rejects (neither JSON nor a number), from a second device."""
    password = auth.create_device("dash-garbage")
    client = testing.mqtt.client(
        "device.dash-garbage", password, tag="dash", protocol=mqtt.MQTTv311
    )
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for _ in range(count):
            client.publish(f"live/dash-garbage/{SENSOR}", b"not json", qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _publish_readings(broker: procs.MosquittoHandle, password: str) -> list[tuple[int, float]]:
    client = testing.mqtt.client(f"device.{DEVICE}", password, tag="dash", protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    base_ms = int(time.time() * 1000) - 30_000  # the last 30 s, one reading every 0.5 s
    sent: list[tuple[int, float]] = []
    try:
        for i, value in enumerate(READINGS):
            ts = base_ms + 500 * i
            info = client.publish(
                f"live/{DEVICE}/{SENSOR}", json.dumps({"value": value, "ts": ts}), qos=1
            )
            info.wait_for_publish(10)
            sent.append((ts, value))
    finally:
        client.disconnect()
        client.loop_stop()
    return sent


@pytest.fixture(scope="package")
def dashboard_stack(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    ferret: Mongo,
    devnet: procs.Devnet,
) -> Iterator[DashboardStack]:
    workdir: Path = tmp_path_factory.mktemp("dashboards")
    store = procs.influx(workdir / "influxdb")
    broker = mosquitto_factory("dashboards-mosquitto")
    auth: AuthStack | None = None
    worker: Worker | None = None
    prometheus: Prometheus | None = None
    try:
        started_at = time.time()
        auth = start_auth_stack(
            workdir / "broker_auth",
            broker,
            ferret.url,
            devnet.url,
            {**store.writer_env, "GRANTS_ACTIVE_INTERVAL_S": "1"},
        )
        client_id = f"ingest-dash-{secrets.token_hex(3)}"
        worker = ingest_worker(workdir / "ingest", broker, store, client_id)
        worker.proc.start()
        prometheus = start_prometheus(
            workdir / "prometheus",
            {"broker_auth": auth.api_url, "ingest": f"http://127.0.0.1:{worker.metrics_port}"},
        )
        auth.create_product(PRODUCT, f"live/{DEVICE}/#", PRICE)
        readings = _publish_readings(broker, auth.create_device(DEVICE))
        _publish_garbage(broker, auth, 3)  # the rejected-readings panels have a reason to show

        buyer, password = f"dash-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
        auth.register(buyer, password)
        order = auth.order(buyer, password, PRODUCT, HOURS)
        pay_from_fresh_seed(devnet, order["address"], order["tag"], order["amount_iota"])
        auth.wait_confirmed(buyer, password, order["order_id"])
        stack = DashboardStack(
            store,
            auth,
            worker,
            started_at,
            readings,
            paid_iota=int(order["amount_iota"]),
            grant_seconds=order["amount_iota"] * 3600 / PRICE,
            prometheus=prometheus,
        )
        reader = store.reader()

        def written() -> bool:
            # What the panels read: raw readings, the final averages, and the business events.
            return (
                len(reader.points("reading", "value", device=DEVICE)) == len(READINGS)
                and any(
                    c == len(READINGS)
                    for _, c in reader.points("reading_avg", "count", device=DEVICE, window="1m")
                )
                and bool(reader.points("payment", "amount_iota", status="confirmed"))
                and bool(reader.points("grant", "seconds", product=PRODUCT))
                # counted every second: one count after the grant
                and any(c == 1 for _, c in reader.points("grants_active", "count", product=PRODUCT))
            )

        wait_for(written, 30, "readings, averages and business events in InfluxDB", 0.5)
        time.sleep(3)  # a few more scrapes after the last change
        yield stack
    finally:
        if prometheus is not None:
            prometheus.proc.stop()
        if worker is not None:
            worker.proc.stop()
        if auth is not None:
            auth.close()
        broker.proc.stop()
        store.proc.stop()
