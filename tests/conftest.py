"""Session-wide real processes: Mosquitto (dynamic security), InfluxDB, FerretDB, Hornet.

Everything runs on free ports under pytest's temporary directory and is stopped at the end.
Tests isolate themselves by using their own device ids, database names or broker instances.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker_auth.broker import acl_model
from broker_auth.broker.acl_model import Client, Role
from testing import procs
from tests.devnet_fixture import TEST_MWM, start_devnet

# Every PyOTA call of the tests (wallet, harness) and every process they start uses the devnets'
# minimum weight magnitude: Hornet refuses any other.
os.environ["IOTA_MWM"] = str(TEST_MWM)

# Devices known to the session broker without broker_auth, for tests of the pipeline alone.
TEST_DEVICES = ("dev-a", "dev-b", "dev-c", "dev-d")


def device_password(device_id: str) -> str:
    return f"pw-{device_id}"


Store = procs.InfluxHandle


@dataclass(frozen=True)
class Mongo:
    proc: procs.Proc
    port: int

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


MosquittoFactory = Callable[..., procs.MosquittoHandle]


@pytest.fixture(scope="session")
def mosquitto_factory(session_dir: Path) -> Iterator[MosquittoFactory]:
    """Start a separate broker (own dynsec state) for tests that reshape access rules."""
    started: list[procs.MosquittoHandle] = []

    def start(
        name: str,
        extra_clients: Sequence[Client] = (),
        extra_roles: Sequence[Role] = (),
    ) -> procs.MosquittoHandle:
        handle = procs.mosquitto(
            session_dir / name,
            admin_password=secrets.token_urlsafe(18),
            ingest_password=secrets.token_urlsafe(18),
            extra_clients=extra_clients,
            extra_roles=extra_roles,
        )
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.proc.stop()


@pytest.fixture(scope="session")
def mosquitto(mosquitto_factory: MosquittoFactory) -> procs.MosquittoHandle:
    """The shared broker, with TEST_DEVICES allowed to publish to their own live topics."""
    return mosquitto_factory(
        "mosquitto",
        extra_clients=[
            Client(acl_model.device_username(d), device_password(d), (f"device.{d}",))
            for d in TEST_DEVICES
        ],
        extra_roles=[acl_model.device_role(d) for d in TEST_DEVICES],
    )


@pytest.fixture(scope="session")
def influx(session_dir: Path) -> Iterator[Store]:
    """The shared InfluxDB 1.13: services write with `writer_env`, tests read with `reader()`."""
    store = procs.influx(session_dir / "influxdb")
    yield store
    store.proc.stop()


@pytest.fixture(scope="session")
def ferret(session_dir: Path) -> Iterator[Mongo]:
    proc, port = procs.ferretdb(session_dir / "ferretdb")
    yield Mongo(proc, port)
    proc.stop()


@pytest.fixture(scope="session")
def devnet(session_dir: Path) -> Iterator[procs.Devnet]:
    """The shared local tangle (Hornet, 1 s milestones) and its faucet."""
    net = start_devnet(session_dir / "devnet")
    yield net
    net.stop()
