"""Fixtures for the ingest tests: the worker as a real process, MQTT clients, store read-back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

import testing.mqtt
from broker_auth.broker import acl_model
from ingest.settings import owned_client_id
from testing import procs
from testing.devices import Device
from testing.scrape import scrape_metrics
from tests.conftest import Store, device_password

# Fast cadences so tests finish quickly; the defaults are for production.
FAST_ENV = {
    "INGEST_WINDOWS": "1m,30s",
    "INGEST_PUBLISH_INTERVAL_S": "0.5",
    "INGEST_FLUSH_INTERVAL_S": "0.05",
    "INGEST_BATCH_SIZE": "100",
    "INGEST_RECEIVE_MAXIMUM": "1000",
    "INGEST_RETRY_MAX_S": "0.5",
    "INGEST_STORE_TIMEOUT_S": "2",
    "INGEST_METRICS_HOST": "127.0.0.1",
}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


@dataclass
class Worker:
    proc: procs.Proc
    metrics_port: int
    client_id: str
    env: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        return scrape_metrics(f"http://127.0.0.1:{self.metrics_port}/metrics", 5)

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def rejected(self, reason: str) -> float:
        return self.metric(f'ingest_readings_rejected_total{{reason="{reason}"}}')

    def ready(self) -> bool:
        try:
            return self.metric("ingest_mqtt_ready") == 1.0
        except OSError:
            return False


def clear_session(port: int, password: str, client_id: str) -> None:
    """Connect with clean start and no expiry, so the broker forgets a worker's session."""
    client = testing.mqtt.client(acl_model.INGEST_USERNAME, password, client_id=client_id)
    props = testing.mqtt.session_expiry(0)
    try:
        client.connect("127.0.0.1", port, clean_start=True, properties=props)
        client.loop_start()
        time.sleep(0.2)
        client.disconnect()
        client.loop_stop()
    except OSError:
        pass


WorkerFactory = Callable[..., Worker]


def ingest_worker(
    workdir: Path, broker: procs.MosquittoHandle, store: Store, client_id: str, **extra: str
) -> Worker:
    """An ingest worker on `broker` with the fast cadences, not started yet (`worker.proc.start()`
    waits until it is subscribed); `extra` overrides any variable."""
    return _ingest_process(
        workdir, broker, store, "ingest", client_id, "INGEST_CLIENT_ID", "INGEST_METRICS_PORT",
        extra,
    )  # fmt: skip


def ingest_averager(
    workdir: Path, broker: procs.MosquittoHandle, store: Store, client_id: str
) -> Worker:
    """The averager (`iot-averager`) with the fast cadences, not started yet."""
    return _ingest_process(
        workdir, broker, store, "ingest.averager", client_id, "INGEST_AVERAGER_CLIENT_ID",
        "INGEST_AVERAGER_METRICS_PORT", {},
    )  # fmt: skip


def _ingest_process(
    workdir: Path,
    broker: procs.MosquittoHandle,
    store: Store,
    module: str,
    client_id: str,
    id_variable: str,
    port_variable: str,
    extra: dict[str, str],
) -> Worker:
    port = procs.free_port()
    # What the service makes of it (`svc.ingest:<id>`): the id its session has on the broker.
    client_id = owned_client_id(acl_model.INGEST_USERNAME, client_id)
    env = {
        **FAST_ENV,
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "INGEST_MQTT_PASSWORD": broker.ingest_password,
        **store.writer_env,
        id_variable: client_id,
        port_variable: str(port),
        **extra,
    }
    name = f"{module}-{client_id.partition(':')[2]}"
    proc = procs.python_service(name, module, workdir, env)
    handle = Worker(proc, port, client_id, env)
    proc.ready = handle.ready
    return handle


def _worker_factory(
    workdir: Path, broker: procs.MosquittoHandle
) -> tuple[WorkerFactory, list[Worker]]:
    started: list[Worker] = []

    def start(store: Store, client_id: str | None = None, **extra: str) -> Worker:
        worker = ingest_worker(workdir, broker, store, client_id or unique("ingest-test"), **extra)
        started.append(worker)  # before start(): a worker that fails to start is stopped too
        worker.proc.start()
        return worker

    return start, started


def _stop_all(started: list[Worker], broker: procs.MosquittoHandle) -> None:
    for worker in started:
        worker.proc.stop()
        clear_session(broker.port, broker.ingest_password, worker.client_id)


@pytest.fixture
def start_worker(tmp_path: Path, mosquitto: procs.MosquittoHandle) -> Iterator[WorkerFactory]:
    """Start ingest workers on the shared broker; each is stopped and its session cleared."""
    start, started = _worker_factory(tmp_path, mosquitto)
    yield start
    _stop_all(started, mosquitto)


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, mosquitto: procs.MosquittoHandle, influx: Store
) -> Iterator[Worker]:
    """One worker for a whole test module, on the shared broker and InfluxDB."""
    start, started = _worker_factory(tmp_path_factory.mktemp("ingest"), mosquitto)
    yield start(influx)
    _stop_all(started, mosquitto)


@pytest.fixture
def device_factory(mosquitto: procs.MosquittoHandle) -> Iterator[Callable[[str], Device]]:
    devices: list[Device] = []

    def make(device_id: str) -> Device:
        """A test device's connection (username device.<id>), publishing at QoS 1."""
        devices.append(Device(mosquitto.port, device_id, device_password(device_id), tag="pub"))
        return devices[-1].connect()

    yield make
    for d in devices:
        d.flush()
        d.close()


class Subscriber:
    """An anonymous MQTT client collecting what it receives (QoS 0: anonymous clients' only)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = testing.mqtt.client(tag="anon")
        self.subscribed = testing.mqtt.subscribe_on_connect(self.client, topic, qos=0)
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_points(store: Store, device: str, sensor: str) -> list[tuple[int, float]]:
    """The raw readings of one series as the store keeps them: (timestamp ms, value)."""
    return store.reader().points("reading", "value", device=device, sensor=sensor)
