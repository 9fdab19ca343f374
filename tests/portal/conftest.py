"""The real stack behind the portal's browser test, plus headless Chromium.

Mosquitto (own dynamic-security state), FerretDB, InfluxDB, the devnet, broker_auth
with the demo seed (device plug-1, product plug-1-live), the ingest worker publishing 1 s
averages, and a plug publishing `live/plug-1/power` at 4 Hz. Everything on free ports and
stopped at the end of the module.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from testing import procs
from testing.broker_auth import start_auth_stack
from testing.devices import Device
from tests.conftest import Mongo, MosquittoFactory, Store
from tests.devnet_fixture import start_devnet

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
DEMO_DEVICE = "plug-1"
DEMO_PRODUCT = "plug-1-live"
# Long enough for the page's 1 s poll to see `unconfirmed` before the milestone confirms.
MILESTONE_INTERVAL_S = 3


@dataclass(frozen=True)
class PortalStack:
    api_url: str
    node_url: str
    mqtt_port: int
    ws_port: int
    admin_token: str
    pool: list[str]
    faucet_url: str


def start_plug(port: int, device_id: str, password: str) -> Device:
    """A device publishing its power draw, as the simulator would (own thread, 4 Hz)."""
    plug = Device(
        port,
        device_id,
        password,
        qos=0,
        client_id=f"device.{device_id}:portal-test",
        protocol=mqtt.MQTTv311,
        # broker_auth may still be projecting the seeded device: keep retrying quickly.
        reconnect_delay=(1, 2),
    )

    def step(n: int) -> None:
        i = n + 1
        value = 1200 + 350 * math.sin(i / 12) + 40 * math.sin(i / 2.3)
        payload = json.dumps({"value": round(value, 1), "ts": time.time(), "unit": "W"})
        plug.publish(payload, when_connected=True)

    return plug.connect_async(keepalive=30).start(0.25, step)


@pytest.fixture(scope="module")
def portal_stack(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    ferret: Mongo,
    influx: Store,
) -> Iterator[PortalStack]:
    work = tmp_path_factory.mktemp("portal")
    # A broker of its own per module (each module builds its own stack).
    broker = mosquitto_factory(f"portal-mosquitto-{work.name}")
    started: list[procs.Proc] = []
    plug: Device | None = None
    try:
        net = start_devnet(work / "devnet", milestone_interval=MILESTONE_INTERVAL_S)
        started += [net.node, net.faucet]
        node_url = net.url
        device_password = secrets.token_urlsafe(18)
        auth = start_auth_stack(
            work / "broker_auth",
            broker,
            ferret.url,
            node_url,
            {
                # The portal builds ws://<page host>:<MQTT_WS_PORT> from this.
                "MQTT_WS_PORT": str(broker.ws_port),
                "WATCHER_INTERVAL_S": "0.5",
                **influx.writer_env,
                # The seller's device list shows last reading times (a read token).
                "INFLUX_READ_TOKEN": influx.credentials.admin_token,
                "SEED_DEMO": "true",
                "DEMO_DEVICE_PASSWORD": device_password,
            },
        )
        started.append(auth.proc)
        ingest = procs.python_service(
            "ingest",
            "ingest",
            work / "ingest",
            env={
                "MQTT_HOST": "127.0.0.1",
                "MQTT_PORT": str(broker.port),
                "INGEST_MQTT_PASSWORD": broker.ingest_password,
                "INGEST_CLIENT_ID": f"ingest-portal-{secrets.token_hex(3)}",
                "INGEST_PUBLISH_INTERVAL_S": "1",
                "INGEST_METRICS_HOST": "127.0.0.1",
                "INGEST_METRICS_PORT": str(metrics_port := procs.free_port()),
                **influx.writer_env,
            },
            ready=lambda: procs.http_ok(f"http://127.0.0.1:{metrics_port}/metrics"),
        )
        started.append(ingest.start())
        plug = start_plug(broker.port, DEMO_DEVICE, device_password)
        yield PortalStack(
            auth.api_url,
            node_url,
            broker.port,
            broker.ws_port,
            auth.admin_token,
            auth.pool,
            net.faucet_url,
        )
    finally:
        if plug is not None:
            plug.close()
        for proc in reversed(started):
            proc.stop()


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/bootstrap.sh)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()
