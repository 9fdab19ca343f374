"""Two broker_auth replicas on one MongoDB and broker (BROKER_AUTH_REPLICAS=2): exactly one
holds the payments lease; killing it hands the lease over within LEASE_TTL_S; across the
hand-over every payment is credited once, no address is handed out twice, no grant outlives
its end by more than the hand-over; throttles and sessions hold across replicas."""

from __future__ import annotations

import datetime as dt
import json
import queue
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

import testing.mqtt
from broker_auth.broker.projector import product_rolename
from testing import procs
from testing.broker_auth import AuthStack, start_replica
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.devnet_fixture import pay_from_fresh_seed

LEASE_TTL_S = 3.0
PASSWORD = "replica-test-password"


@pytest.fixture(scope="module")
def pair(
    auth_stack_factory: AuthStackFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AuthStack, AuthStack]]:
    env = {"LEASE_TTL_S": str(LEASE_TTL_S), "LEASE_SAFETY_S": "0.5", "LOGIN_MAX_FAILURES": "4"}
    first = auth_stack_factory("replica-a", **env)
    second = start_replica(first, tmp_path_factory.mktemp("replica-b"))
    yield first, second
    second.close()


def health(stack: AuthStack) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{stack.api_url}/healthz", timeout=5).json()
    return body


def leaders(*stacks: AuthStack) -> list[bool]:
    return [bool(health(s)["leader"]) for s in stacks]


def test_exactly_one_replica_leads(pair: tuple[AuthStack, AuthStack]) -> None:
    wait_for(lambda: sorted(leaders(*pair)) == [False, True], 10, "one leader")
    for _ in range(10):  # and it stays so across renewals
        assert sorted(leaders(*pair)) == [False, True]
        time.sleep(0.3)


def test_throttles_and_sessions_hold_across_replicas(pair: tuple[AuthStack, AuthStack]) -> None:
    a, b = pair
    a.register("rep-throttle", PASSWORD)
    for i in range(4):  # LOGIN_MAX_FAILURES=4, alternating replicas
        target = (a, b)[i % 2]
        r = httpx.post(
            f"{target.api_url}/api/sessions",
            json={"username": "rep-throttle", "password": "wrong"},
            timeout=10,
        )
        assert r.status_code == 401
    for target in (a, b):
        r = httpx.post(
            f"{target.api_url}/api/sessions",
            json={"username": "rep-throttle", "password": "wrong"},
            timeout=10,
        )
        assert r.status_code == 429, "the other replica's failures were not counted"
    a.register("rep-session", PASSWORD)
    r = httpx.post(
        f"{a.api_url}/api/sessions",
        json={"username": "rep-session", "password": PASSWORD},
        timeout=10,
    )
    token = r.json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{b.api_url}/api/grants", headers=bearer, timeout=5).status_code == 200
    assert httpx.delete(f"{b.api_url}/api/sessions/current", headers=bearer).status_code == 204
    assert httpx.get(f"{a.api_url}/api/grants", headers=bearer, timeout=5).status_code == 401


def test_the_leaders_notices_reach_the_buyer(
    pair: tuple[AuthStack, AuthStack], devnet: procs.Devnet
) -> None:
    """Every replica sends notices as `svc.notifier`. One that starts later must not lock the
    others' notifier out of the broker (each used to set a password of its own: the replica
    that started first, the leader, then told its buyers nothing)."""
    a, b = pair
    wait_for(lambda: sorted(leaders(a, b)) == [False, True], 10, "one leader")
    leader, standby = (a, b) if health(a)["leader"] else (b, a)
    # The standby restarts (a rolling upgrade) after the leader's notifier connected: it sets
    # svc.notifier's password again, whichever replica leads.
    standby.proc.kill()
    standby.proc.start()
    wait_for(lambda: health(standby).get("status") == "ok", 30, "the standby back")
    time.sleep(2)  # its notifier provisions once the control client answers
    assert health(leader)["leader"]
    leader.create_product("rep-notify", "live/plug-2/#", 3600)  # 1 iota = 1 s
    buyer = "rep-notify-buyer"
    leader.register(buyer, PASSWORD)
    notes: queue.Queue[dict[str, Any]] = queue.Queue()
    listener = testing.mqtt.client(buyer, leader.mqtt_passwords[buyer], tag="listen")
    subscribed = testing.mqtt.subscribe_on_connect(listener, f"notify/{buyer}", qos=1)
    listener.on_message = lambda _c, _u, m: notes.put(json.loads(m.payload))
    session = testing.mqtt.session_expiry(600)  # the grant's role change kicks it: it comes back
    listener.connect("127.0.0.1", leader.broker.port, clean_start=False, properties=session)
    listener.loop_start()
    try:
        assert subscribed.wait(5)
        order = leader.order(buyer, PASSWORD, "rep-notify", 30 / 3600)
        pay_from_fresh_seed(devnet, order["address"], order["tag"], 30)
        note = notes.get(timeout=90)
        assert note["event"] == "grant_started" and note["product_id"] == "rep-notify"
    finally:
        listener.loop_stop()
        listener.disconnect()


def test_leader_killed_mid_payments(
    pair: tuple[AuthStack, AuthStack], devnet: procs.Devnet
) -> None:
    a, b = pair
    wait_for(lambda: sorted(leaders(a, b)) == [False, True], 10, "one leader")
    leader, standby = (a, b) if health(a)["leader"] else (b, a)
    leader.create_product("rep-short", "live/plug-1/#", 3600)  # 1 iota = 1 s
    leader.create_product("rep-long", "live/plug-1/#", 3600)
    buyer = "rep-buyer"
    leader.register(buyer, PASSWORD)
    standby.mqtt_passwords[buyer] = leader.mqtt_passwords[buyer]

    # Orders from both replicas at once: never one address for two orders.
    with ThreadPoolExecutor(8) as pool:
        orders = list(
            pool.map(
                lambda i: (a, b)[i % 2].order(buyer, PASSWORD, "rep-long", 10 / 3600), range(8)
            )
        )
    assert len({o["address"] for o in orders}) == 8
    short = leader.order(buyer, PASSWORD, "rep-short", 2 / 3600)

    # A 2 s grant, confirmed; the leader dies before it ends: the standby must revoke it.
    pay_from_fresh_seed(devnet, short["address"], short["tag"], 2)
    leader.wait_confirmed(buyer, PASSWORD, short["order_id"], timeout=60)
    killed_at = time.monotonic()
    leader.proc.kill()

    # Payments sent across the hand-over, confirmed while nobody or the new leader watches.
    paid = orders[:3]
    threads = [
        threading.Thread(
            target=pay_from_fresh_seed,
            args=(devnet, o["address"], o["tag"], 10),
        )
        for o in paid
    ]
    for t in threads:
        t.start()
    wait_for(lambda: health(standby)["leader"], LEASE_TTL_S + 5, "the standby to lead", 0.05)
    handover = time.monotonic() - killed_at
    print(f"\nhand-over after SIGKILL of the leader: {handover:.2f} s (LEASE_TTL_S {LEASE_TTL_S})")
    # Within the TTL of the last renewal; the slack is the standby's 0.1 s look and our polling.
    assert handover <= LEASE_TTL_S + 1.0, f"hand-over took {handover:.2f} s"

    short_role = product_rolename("rep-short")
    wait_for(
        lambda: short_role not in (standby.client_roles(buyer) or set()),
        LEASE_TTL_S + 5,
        "the short grant revoked",
    )
    for t in threads:
        t.join(90)
    for o in paid:
        standby.wait_confirmed(buyer, PASSWORD, o["order_id"], timeout=60)

    client: MongoClient[dict[str, Any]] = MongoClient(a.env["MONGO_URL"], tz_aware=True)
    db = client[a.env["MONGO_DB"]]
    try:
        grant_short = db.grants.find_one({"product_id": "rep-short"})
        assert grant_short is not None and grant_short["active"] is False
        late = (grant_short["revoked_at"] - grant_short["expires_at"]).total_seconds()
        print(f"short grant revoked {late:.2f} s after its end (during the hand-over)")
        assert late <= handover + 1.0, f"the short grant outlived its end by {late:.2f} s"

        for o in [short, *paid]:
            payments = list(db.payments.find({"order_id": o["order_id"]}))
            assert len(payments) == 1 and payments[0]["credited"], payments
        grant_long = db.grants.find_one({"product_id": "rep-long"})
        assert grant_long is not None
        applied = grant_long["applied_payments"]
        assert sorted(applied) == sorted({str(p) for p in applied}) and len(applied) == 3
        length = grant_long["expires_at"] - grant_long["starts_at"]
        assert dt.timedelta(seconds=29) <= length <= dt.timedelta(seconds=31), length
    finally:
        client.close()

    # The killed replica comes back as the standby.
    leader.proc.start()
    wait_for(lambda: health(leader).get("status") == "ok", 30, "the old leader back")
    assert leaders(leader, standby) == [False, True]


def test_a_paused_leader_comes_back_fenced(pair: tuple[AuthStack, AuthStack]) -> None:
    """SIGSTOP the leader (a long GC pause, a frozen VM) past the TTL: the other takes over, and
    the paused one, resumed, no longer counts itself leader: it does not renew a lease that was
    taken, and it stopped acting before the take-over."""
    wait_for(lambda: sorted(leaders(*pair)) == [False, True], 10, "one leader")
    leader, standby = pair if health(pair[0])["leader"] else pair[::-1]
    leader.proc.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: health(standby)["leader"], LEASE_TTL_S + 5, "the standby to lead", 0.05)
    finally:
        leader.proc.signal(signal.SIGCONT)
    assert health(leader)["leader"] is False
    for _ in range(10):
        assert leaders(leader, standby) == [False, True]
        time.sleep(0.3)
    assert "payments lease lost" in leader.proc.log_text()
