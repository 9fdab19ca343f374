"""Buyer sessions: log in once, then a bearer token; stored only as a hash; expiry and log-out
revoke it; it opens the buyer's calls and nothing else."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from testing.broker_auth import AuthStack
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory

PASSWORD = "session-password-1"
TTL_S = 3.0


@pytest.fixture(scope="module")
def stack(auth_stack_factory: AuthStackFactory) -> AuthStack:
    s = auth_stack_factory("sessions", SESSION_TTL_S=str(TTL_S))
    for name in ("alice", "bob"):
        s.register(name, PASSWORD)
    return s


def login(stack: AuthStack, username: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(
        f"{stack.api_url}/api/sessions",
        json={"username": username, "password": password},
        timeout=10,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def session_docs(stack: AuthStack) -> list[dict[str, Any]]:
    client: MongoClient[dict[str, Any]]
    with MongoClient(stack.env["MONGO_URL"]) as client:
        return list(client[stack.env["MONGO_DB"]]["sessions"].find())


def test_login_gives_a_token_that_opens_the_buyers_calls(stack: AuthStack) -> None:
    r = login(stack, "alice")
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"token", "expires_at"} and len(body["token"]) >= 40
    api = stack.http()
    assert api.get("/api/grants", headers=bearer(body["token"])).status_code == 200
    order = api.post(
        "/api/orders", json={"product_id": "nope", "hours": 1}, headers=bearer(body["token"])
    )
    assert order.status_code == 404  # authenticated: the product is what is missing


def test_only_the_tokens_hash_is_stored(stack: AuthStack) -> None:
    token = login(stack, "alice").json()["token"]
    docs = session_docs(stack)
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert digest in {d["_id"] for d in docs}
    assert all(token not in repr(d) for d in docs)


def test_log_out_revokes_the_token(stack: AuthStack) -> None:
    token = login(stack, "alice").json()["token"]
    other = login(stack, "alice").json()["token"]  # a second tab
    api = stack.http()
    assert api.delete("/api/sessions/current", headers=bearer(token)).status_code == 204
    r = api.get("/api/grants", headers=bearer(token))
    assert r.status_code == 401 and "detail" in r.json()
    assert api.get("/api/grants", headers=bearer(other)).status_code == 200
    # Log-out needs a session (HTTP Basic has nothing to revoke).
    assert api.delete("/api/sessions/current", auth=("alice", PASSWORD)).status_code == 401


def test_a_token_expires(stack: AuthStack) -> None:
    token = login(stack, "bob").json()["token"]
    api = stack.http()
    assert api.get("/api/grants", headers=bearer(token)).status_code == 200
    time.sleep(TTL_S + 0.5)
    assert api.get("/api/grants", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    ("username", "password", "status"),
    [("alice", "wrong-password", 401), ("nobody", PASSWORD, 401), ("", PASSWORD, 422)],
)
def test_wrong_logins_are_refused(
    stack: AuthStack, username: str, password: str, status: int
) -> None:
    r = login(stack, username, password)
    assert r.status_code == status, r.text
    assert "token" not in r.text


def test_tokens_do_not_cross_roles(stack: AuthStack) -> None:
    token = login(stack, "alice").json()["token"]
    api = stack.http()
    # A buyer's session is no admin token, and the admin token is no buyer's session.
    assert api.get("/api/payments", headers=bearer(token)).status_code == 401
    assert api.get("/api/grants/all", headers=bearer(token)).status_code == 401
    assert api.get("/api/orders", headers=bearer(stack.admin_token)).status_code == 401
    assert api.get("/api/grants", headers=bearer(stack.admin_token)).status_code == 401
    assert api.get("/api/grants/all", headers=bearer(stack.admin_token)).status_code == 200
    assert api.get("/api/grants", headers=bearer("forged-" + token[7:])).status_code == 401


def test_orders_stay_the_owners(stack: AuthStack) -> None:
    api = stack.http()
    api.post(
        "/api/products",
        json={"id": "sess-live", "topic_filter": "live/sess/#", "price_iota_per_hour": 3600},
        headers=stack.admin,
    )
    alice = login(stack, "alice").json()["token"]
    bob = login(stack, "bob").json()["token"]
    order = api.post(
        "/api/orders", json={"product_id": "sess-live", "hours": 0.01}, headers=bearer(alice)
    ).json()
    path = f"/api/orders/{order['order_id']}"
    assert api.get(path, headers=bearer(alice)).status_code == 200
    assert api.get(path, headers=bearer(bob)).status_code == 404


def test_the_mqtt_password_is_rotated_and_the_old_one_cut(stack: AuthStack) -> None:
    stack.register("carol", PASSWORD)
    old = stack.mqtt_passwords["carol"]
    connected = stack.buyer_probe("carol")
    assert connected.connect()
    token = login(stack, "carol").json()["token"]
    r = stack.http().post("/api/account/mqtt-password", headers=bearer(token))
    assert r.status_code == 201, r.text
    new = r.json()["mqtt_password"]
    assert new not in (old, PASSWORD)
    stack.mqtt_passwords["carol"] = new
    wait_for(lambda: connected.disconnects > 0, 5, "the connected client cut", 0.05)
    connected.close()
    assert not stack.probe("carol", old).connect()
    fresh = stack.buyer_probe("carol")
    assert fresh.connect()
    fresh.close()
    # The login password still logs in to the API, never to MQTT.
    assert login(stack, "carol").status_code == 201
    assert not stack.probe("carol", PASSWORD).connect()


def test_changing_the_login_password_ends_every_session(stack: AuthStack) -> None:
    stack.register("dave", PASSWORD)
    token = login(stack, "dave").json()["token"]
    api = stack.http()
    wrong = api.post(
        "/api/account/password",
        json={"old_password": "not-it-at-all", "new_password": "brand-new-password"},
        headers=bearer(token),
    )
    assert wrong.status_code == 401
    short = api.post(
        "/api/account/password",
        json={"old_password": PASSWORD, "new_password": "short"},
        headers=bearer(token),
    )
    assert short.status_code == 422
    r = api.post(
        "/api/account/password",
        json={"old_password": PASSWORD, "new_password": "brand-new-password"},
        headers=bearer(token),
    )
    assert r.status_code == 204, r.text
    assert api.get("/api/grants", headers=bearer(token)).status_code == 401
    assert login(stack, "dave").status_code == 401
    assert login(stack, "dave", "brand-new-password").status_code == 201
    # MQTT is not affected.
    probe = stack.buyer_probe("dave")
    assert probe.connect()
    probe.close()


def test_accounts_of_the_shared_password_era_are_migrated_at_start(stack: AuthStack) -> None:
    # An account as an earlier release left it: MQTT password = login password, no flag.
    stack.register("legacy", PASSWORD)
    stack.control().set_client_password("legacy", PASSWORD)
    client: MongoClient[dict[str, Any]]
    with MongoClient(stack.env["MONGO_URL"]) as client:
        client[stack.env["MONGO_DB"]]["accounts"].update_one(
            {"_id": "legacy"}, {"$unset": {"mqtt_separate": ""}}
        )
    old_client = stack.probe("legacy", PASSWORD)
    assert old_client.connect()
    stack.restart()
    wait_for(lambda: old_client.disconnects > 0, 15, "the legacy client cut", 0.1)
    old_client.close()
    assert not stack.probe("legacy", PASSWORD).connect()
    assert "account(s) had their login password as MQTT password" in stack.proc.log_text()
    # The buyer takes a new MQTT password; the login password still logs in to the API.
    token = login(stack, "legacy").json()["token"]
    new = stack.http().post("/api/account/mqtt-password", headers=bearer(token)).json()
    stack.mqtt_passwords["legacy"] = new["mqtt_password"]
    probe = stack.buyer_probe("legacy")
    assert probe.connect()
    probe.close()
