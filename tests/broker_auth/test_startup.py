"""broker_auth may start before Mosquitto (as under supervisord): it serves, reports the broker
down, and seeds and reconciles as soon as the broker comes up."""

from __future__ import annotations

import secrets

import pytest

from testing.broker_auth import start_auth_stack
from testing.procs import wait_for
from tests.conftest import Mongo, MosquittoFactory


def test_starts_before_the_broker(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    ferret: Mongo,
) -> None:
    workdir = tmp_path_factory.mktemp("startup")
    broker = mosquitto_factory(f"{workdir.name}-mosquitto")
    broker.proc.stop()
    password = secrets.token_urlsafe(16)
    stack = start_auth_stack(
        workdir,
        broker,
        ferret.url,
        extra_env={"SEED_DEMO": "true", "DEMO_DEVICE_PASSWORD": password},
        wait_for_broker=False,
    )
    try:
        assert (stack.health() or {}).get("broker") == "down"
        broker.proc.start()
        wait_for(lambda: (stack.health() or {}).get("broker") == "ok", 20, "the broker")

        # The demo seed ran once the broker was there: its device may connect.
        def device_connects() -> bool:
            probe = stack.probe("device.plug-1", password)
            ok = probe.connect()
            if ok:
                probe.close()
            return ok

        wait_for(device_connects, 10, "the seeded device", 0.3)
        products = stack.http().get("/api/products").json()
        assert [p["id"] for p in products] == ["plug-1-live"]
    finally:
        stack.close()
        broker.proc.stop()
