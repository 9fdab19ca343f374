"""Only the payments-lease holder writes grant roles, even when a standby serves
`POST /api/account/mqtt-password`.

Two replicas on one FerretDB and Mosquitto; the standby talks to the broker through a proxy
(control_proxy.py) that records every control command it sends and can pause it between two
of them. The standby may write the buyer's client (password, existence) but never a
`product.*` role: it asks the holder to re-sync the buyer's grant roles, which the holder's
expiry loop does within about a second. RECONCILE_INTERVAL_S stays at 60 s, so no periodic
reconciliation hides a wrong role.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from broker_auth.broker.projector import product_rolename
from broker_auth.infra.clock import utcnow
from testing.broker_auth import AuthStack, credited_grant, start_replica
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.broker_auth.control_proxy import ControlProxy

PASSWORD = "standby-roles-password"
PRODUCT = "sb-live"


class Pair:
    def __init__(self, leader: AuthStack, standby: AuthStack, proxy: ControlProxy) -> None:
        self.leader = leader
        self.standby = standby
        self.proxy = proxy
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(
            leader.env["MONGO_URL"], tz_aware=True
        )
        self.db: Database[dict[str, Any]] = self.mongo[leader.env["MONGO_DB"]]

    def buyer_with_grant(self, username: str) -> None:
        """A buyer whose grant of PRODUCT runs for an hour, its role on the client (as a credit
        leaves it)."""
        self.leader.register(username, PASSWORD)
        self.db.grants.insert_one(credited_grant(username, PRODUCT, "live/sb/#", 3600))
        self.leader.control().add_client_role(username, product_rolename(PRODUCT))

    def role_writes_by_standby(self, username: str) -> list[dict[str, Any]]:
        """The grant-role commands the standby sent for this buyer."""
        return [
            c
            for c in self.proxy.commands
            if c.get("command") in ("addClientRole", "removeClientRole")
            and c.get("username") == username
            and str(c.get("rolename", "")).startswith("product.")
        ]


@pytest.fixture(scope="module")
def pair(
    auth_stack_factory: AuthStackFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    env = {"LEASE_TTL_S": "3", "LEASE_SAFETY_S": "0.5", "RECONCILE_INTERVAL_S": "60"}
    leader = auth_stack_factory("standby-roles-a", **env)
    wait_for(lambda: (leader.health() or {}).get("leader"), 10, "the first replica to lead")
    proxy = ControlProxy(leader.broker.port)
    standby = start_replica(
        leader,
        tmp_path_factory.mktemp("standby-roles-b"),
        MQTT_PORT=str(proxy.port),
        DYNSEC_TIMEOUT_S="10",
    )
    assert (standby.health() or {}).get("leader") is False
    leader.create_product(PRODUCT, "live/sb/#", 3600)
    p = Pair(leader, standby, proxy)
    yield p
    p.mongo.close()
    standby.close()
    proxy.close()


def rotate(stack: AuthStack, username: str) -> str:
    r = httpx.post(
        f"{stack.api_url}/api/account/mqtt-password", auth=(username, PASSWORD), timeout=30
    )
    assert r.status_code == 201, r.text
    password: str = r.json()["mqtt_password"]
    return password


def test_a_standby_rotation_never_brings_back_a_revoked_role(pair: Pair) -> None:
    """The standby reads the buyer's grants, the leader revokes one, then the standby goes on:
    the revoked role must stay off the client."""
    username = "sb-revoked"
    role = product_rolename(PRODUCT)
    pair.buyer_with_grant(username)
    old_password = pair.leader.mqtt_passwords[username]
    assert role in (pair.leader.client_roles(username) or set())

    # Pause the standby's broker link right after it looked the client up (the point where a
    # standby that syncs grant roles has just read the grants as active).
    pair.proxy.hold_after(f'"command": "getClient", "username": "{username}"'.encode())
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["password"] = rotate(pair.standby, username)
        except BaseException as exc:  # reported below
            result["error"] = exc

    rotation = threading.Thread(target=run)
    rotation.start()
    seen_during: list[set[str]] = []
    try:
        wait_for(lambda: pair.proxy.held.is_set() or not rotation.is_alive(), 15, "the hold")
        time.sleep(0.3)  # the standby's MongoDB reads happen now, before the revocation
        pair.db.grants.update_one(
            {"_id": f"{username}/{PRODUCT}"}, {"$set": {"expires_at": utcnow()}}
        )
        revoked_at = time.monotonic()
        wait_for(
            lambda: role not in (pair.leader.client_roles(username) or set()),
            5,
            "the leader to revoke the grant",
        )
        grant = pair.db.grants.find_one({"_id": f"{username}/{PRODUCT}"})
        assert grant is not None and grant["active"] is False
        print(f"\nleader revoked the role {time.monotonic() - revoked_at:.2f} s after the end")
    finally:
        pair.proxy.release()
    rotation.join(30)
    assert "error" not in result, result
    new_password = result["password"]

    # Watch the client closely for a few seconds: the role never comes back.
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline:
        roles = pair.leader.client_roles(username) or set()
        seen_during.append(roles)
        assert role not in roles, "a standby rotation brought back a revoked grant role"
        time.sleep(0.02)
    assert pair.role_writes_by_standby(username) == [], pair.role_writes_by_standby(username)

    # The new MQTT password works, the old one does not.
    probe = pair.leader.probe(username, new_password)
    assert probe.connect(), "the new MQTT password does not work"
    probe.close()
    assert pair.leader.probe(username, old_password).connect() is False
    print(f"{len(seen_during)} looks at the client over 4 s: the role never came back")


def test_a_standby_recreates_a_missing_client_and_the_leader_restores_its_grants(
    pair: Pair,
) -> None:
    """The client went missing in the broker; the standby serves the rotation: it creates the
    client (password, notifications) and the lease holder gives back the paid role."""
    username = "sb-missing"
    role = product_rolename(PRODUCT)
    pair.buyer_with_grant(username)
    pair.leader.control().delete_client(username)
    started = time.monotonic()
    new_password = rotate(pair.standby, username)
    answered = time.monotonic() - started
    wait_for(
        lambda: role in (pair.leader.client_roles(username) or set()),
        5,
        "the lease holder to restore the grant role",
        0.02,
    )
    restored = time.monotonic() - started
    print(f"\nrotation answered in {answered:.2f} s; grant role restored after {restored:.2f} s")
    assert pair.leader.client_roles(username) == {role, f"notify.{username}"}
    assert pair.role_writes_by_standby(username) == [], pair.role_writes_by_standby(username)
    probe = pair.leader.probe(username, new_password)
    assert probe.connect(), "the new MQTT password does not work"
    probe.close()
    # Requests are consumed.
    wait_for(lambda: pair.db.grant_syncs.count_documents({}) == 0, 5, "the sync request consumed")


def test_a_standby_rotation_keeps_a_running_grant(pair: Pair) -> None:
    """The usual case: the client exists with its paid role; it keeps it throughout."""
    username = "sb-running"
    role = product_rolename(PRODUCT)
    pair.buyer_with_grant(username)
    new_password = rotate(pair.standby, username)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert role in (pair.leader.client_roles(username) or set())
        time.sleep(0.05)
    assert pair.role_writes_by_standby(username) == [], pair.role_writes_by_standby(username)
    probe = pair.leader.probe(username, new_password)
    assert probe.connect()
    probe.close()
