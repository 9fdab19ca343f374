"""The whole stack for the fault tests, every process its own, on free ports in one folder.

InfluxDB, FerretDB, Mosquitto (dynamic security), the devnet (Hornet's coordinator node,
the Hornet node the services use, which the tests kill, and the faucet), broker_auth and the
ingest worker. Nothing is shared with other test modules: these processes get killed. Each `Proc`
keeps its command line, ports and data directory, so `proc.start()` after a kill brings the
same service back on the same port with the same data.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from stack.mqtt_probe import MqttProbe
from testing import procs
from testing.broker_auth import get_order, place_order, start_auth_stack
from testing.scrape import scrape_metrics
from tests.devnet_fixture import start_devnet

MILESTONE_INTERVAL_S = 1
WATCHER_INTERVAL_S = 0.25
# The watcher backs off while the node or MongoDB is down; the production default (10 s) would
# dominate the recovery figures of a 4 s outage, so the tests cap it lower.
WATCHER_MAX_BACKOFF_S = 1.0
DEVICES = ("fd-1", "fd-2")
SLOW = "fault-slow"  # 3600 iota/h: 1 iota buys 1 s (long, stacked grants)
SLOW_PRICE = 3600
FAST = "fault-fast"  # 3 600 000 iota/h: 1000 iota buy 1 s (grants that end within a test)
FAST_PRICE = 3_600_000
LIVE_FILTER = "live/fd-1/#"
BUYER_PASSWORD = "fault-buyer-pw-1"

INGEST_ENV = {
    "INGEST_WINDOWS": "1m",
    "INGEST_PUBLISH_INTERVAL_S": "1",
    "INGEST_FLUSH_INTERVAL_S": "0.1",
    "INGEST_BATCH_SIZE": "100",
    "INGEST_RECEIVE_MAXIMUM": "1000",
    "INGEST_RETRY_MAX_S": "0.5",
    "INGEST_STORE_TIMEOUT_S": "2",
    "INGEST_METRICS_HOST": "127.0.0.1",
}


@dataclass
class FaultStack:
    workdir: Path
    store: procs.InfluxHandle
    ferret: procs.Proc
    broker: procs.MosquittoHandle
    net: procs.Devnet
    auth: procs.Proc
    api_url: str
    admin_token: str
    ingest: procs.Proc
    ingest_metrics_port: int
    device_passwords: dict[str, str] = field(default_factory=dict)
    mqtt_passwords: dict[str, str] = field(default_factory=dict)  # buyers' (not their login)

    @property
    def node(self) -> procs.Proc:
        return self.net.node

    @property
    def node_url(self) -> str:
        return self.net.url

    @property
    def faucet_url(self) -> str:
        return self.net.faucet_url

    @property
    def procs(self) -> dict[str, procs.Proc]:
        return {
            "influxdb": self.store.proc,
            "ingest": self.ingest,
            "broker_auth": self.auth,
            "hornet": self.node,
            "ferretdb": self.ferret,
            "mosquitto": self.broker.proc,
        }

    def stop(self) -> None:
        # The worker first, so its shutdown flush finds the store and the broker up.
        for proc in (self.ingest, self.auth, self.broker.proc, self.ferret):
            proc.stop()
        self.net.stop()
        self.store.proc.stop()

    # -- health ------------------------------------------------------------------------------
    def healthz(self) -> int | None:
        """broker_auth's /healthz status code (200 only when MongoDB, broker and node are ok)."""
        try:
            # MongoDB down: /healthz waits for its ping (MONGO_TIMEOUT_S, 2 s) before the 503.
            return httpx.get(f"{self.api_url}/healthz", timeout=4).status_code
        except httpx.HTTPError:
            return None

    def ingest_metrics(self) -> dict[str, float] | None:
        try:
            return scrape_metrics(f"http://127.0.0.1:{self.ingest_metrics_port}/metrics", 1.5)
        except OSError:
            return None

    def ingest_ready(self) -> bool:
        m = self.ingest_metrics()
        return bool(m and m.get("ingest_mqtt_ready") == 1.0)

    def all_healthy(self) -> bool:
        return (
            all(p.running() for p in self.procs.values())
            and self.healthz() == 200
            and self.ingest_ready()
        )

    # -- HTTP API ----------------------------------------------------------------------------
    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.api_url}{path}", timeout=10, **kwargs)

    def register(self, prefix: str) -> tuple[str, str]:
        username = f"{prefix}-{secrets.token_hex(3)}"
        r = self.api(
            "POST", "/api/accounts", json={"username": username, "password": BUYER_PASSWORD}
        )
        assert r.status_code == 201, r.text
        self.mqtt_passwords[username] = r.json()["mqtt_password"]
        return username, BUYER_PASSWORD

    def create_order(self, auth: tuple[str, str], product: str, seconds: float) -> dict[str, Any]:
        return place_order(self.api_url, *auth, product, seconds / 3600)

    def get_order(self, auth: tuple[str, str], order_id: str) -> dict[str, Any]:
        return get_order(self.api_url, *auth, order_id)

    def grants(self, auth: tuple[str, str]) -> list[dict[str, Any]]:
        r = self.api("GET", "/api/grants", auth=auth)
        assert r.status_code == 200, r.text
        grants: list[dict[str, Any]] = r.json()
        return grants

    def payments(self) -> list[dict[str, Any]]:
        r = self.api("GET", "/api/payments", headers=self.admin)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        return found

    # -- MQTT --------------------------------------------------------------------------------
    def may_subscribe(self, auth: tuple[str, str], topic: str = LIVE_FILTER) -> bool | None:
        """Whether a fresh connection of the buyer gets `topic` (None: broker unreachable)."""
        probe = MqttProbe(self.broker.port, auth[0], self.mqtt_passwords[auth[0]])
        try:
            if not probe.connect(timeout=3):
                return False
            granted = probe.subscribe(topic, timeout=3)
            # A connection lost meanwhile (broker killed) is no answer, not a refusal.
            return granted if granted or probe.connected else None
        except (OSError, TimeoutError):
            return None
        finally:
            with contextlib.suppress(Exception):
                probe.close()

    # -- time series -------------------------------------------------------------------------
    def export_counts(self, sensor: str) -> dict[str, Counter[int]]:
        """Stored points per timestamp of each device's `reading` of `sensor`. InfluxDB keeps one
        point per series and time (a reading written twice is stored once): a duplicate shows
        as a timestamp never sent, which the callers check."""
        return {
            tags["device"]: Counter(t for t, _ in points)
            for tags, points in self.store.reader().series("reading", "value", sensor=sensor)
        }


def start_stack(workdir: Path) -> FaultStack:
    started: list[procs.Proc] = []
    try:
        return _start(workdir, started)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise


def _start(workdir: Path, started: list[procs.Proc]) -> FaultStack:
    store = procs.influx(workdir / "influxdb")
    started.append(store.proc)
    ferret, ferret_port = procs.ferretdb(workdir / "ferretdb")
    started.append(ferret)
    broker = procs.mosquitto(
        workdir / "mosquitto",
        admin_password=secrets.token_urlsafe(18),
        ingest_password=secrets.token_urlsafe(18),
    )
    started.append(broker.proc)
    net = start_devnet(workdir / "devnet", milestone_interval=MILESTONE_INTERVAL_S, crash_safe=True)
    started += [p for p in (net.coordinator, net.node, net.faucet) if p is not None]

    service = start_auth_stack(
        workdir / "broker_auth",
        broker,
        f"mongodb://127.0.0.1:{ferret_port}/",
        net.url,
        {
            "WATCHER_INTERVAL_S": str(WATCHER_INTERVAL_S),
            "WATCHER_MAX_BACKOFF_S": str(WATCHER_MAX_BACKOFF_S),
            **store.writer_env,
            "GRANTS_ACTIVE_INTERVAL_S": "2",
        },
        pool_size=400,
    )
    started.append(service.proc)

    metrics_port = procs.free_port()
    ingest = procs.python_service(
        "ingest",
        "ingest",
        workdir / "ingest",
        env={
            **INGEST_ENV,
            "MQTT_HOST": "127.0.0.1",
            "MQTT_PORT": str(broker.port),
            "INGEST_MQTT_PASSWORD": broker.ingest_password,
            "INGEST_CLIENT_ID": "ingest-faults",
            **store.writer_env,
            "INGEST_METRICS_PORT": str(metrics_port),
        },
    )
    stack = FaultStack(
        workdir=workdir,
        store=store,
        ferret=ferret,
        broker=broker,
        net=net,
        auth=service.proc,
        api_url=service.api_url,
        admin_token=service.admin_token,
        ingest=ingest,
        ingest_metrics_port=metrics_port,
    )
    ingest.ready = stack.ingest_ready
    ingest.start()
    started.append(ingest)

    for product, price in ((SLOW, SLOW_PRICE), (FAST, FAST_PRICE)):
        r = stack.api(
            "POST",
            "/api/products",
            json={"id": product, "topic_filter": LIVE_FILTER, "price_iota_per_hour": price},
            headers=stack.admin,
        )
        assert r.status_code == 201, r.text
    for device in (*DEVICES, "fd-sim"):
        r = stack.api("POST", "/api/devices", json={"device_id": device}, headers=stack.admin)
        assert r.status_code == 201, r.text
        stack.device_passwords[device] = r.json()["password"]
    return stack
