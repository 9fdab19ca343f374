"""MongoDB down: every call answers 503 JSON (never 500, never a wrong 401), then recovers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testing import procs
from testing.broker_auth import AuthStack, start_auth_stack
from testing.procs import wait_for
from tests.conftest import MosquittoFactory

PASSWORD = "outage-password"


@pytest.fixture(scope="module")
def own_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[procs.Proc, str]]:
    proc, port = procs.ferretdb(tmp_path_factory.mktemp("outage-ferretdb"))
    yield proc, f"mongodb://127.0.0.1:{port}/"
    proc.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    own_mongo: tuple[procs.Proc, str],
) -> Iterator[AuthStack]:
    workdir = tmp_path_factory.mktemp("outage")
    broker = mosquitto_factory(f"{workdir.name}-mosquitto")
    s = start_auth_stack(workdir, broker, own_mongo[1], extra_env={"MONGO_TIMEOUT_S": "1"})
    s.register("steady", PASSWORD)
    yield s
    s.close()
    broker.proc.stop()


def test_database_outage_is_503_everywhere(
    stack: AuthStack, own_mongo: tuple[procs.Proc, str]
) -> None:
    mongo, _ = own_mongo
    api = stack.http()
    mongo.stop()
    try:
        health = api.get("/healthz")
        assert health.status_code == 503
        assert health.json()["mongo"] == "down" and health.json()["status"] == "degraded"
        calls: list[tuple[str, str, dict[str, Any], object]] = [
            ("GET", "/api/products", {}, None),
            ("POST", "/api/accounts", {}, {"username": "newbie", "password": PASSWORD}),
            ("GET", "/api/grants", {"auth": ("steady", PASSWORD)}, None),
            (
                "POST",
                "/api/orders",
                {"auth": ("steady", PASSWORD)},
                {"product_id": "x", "hours": 1},
            ),
            ("GET", "/api/payments", {"headers": stack.admin}, None),
            ("POST", "/api/devices", {"headers": stack.admin}, {"device_id": "d1"}),
        ]
        for method, path, kwargs, body in calls:
            r = api.request(method, path, json=body, **kwargs)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.json() == {"detail": "database unavailable"}
        # Invalid input is still a 4xx: validation needs no database.
        assert api.post("/api/accounts", json={"username": "x"}).status_code == 422
    finally:
        mongo.start()
    wait_for(lambda: (stack.health() or {}).get("mongo") == "ok", 30, "MongoDB back")
    assert api.get("/api/grants", auth=("steady", PASSWORD)).status_code == 200
    stack.register("newbie", PASSWORD)
    assert "Traceback" not in stack.proc.log_text()
