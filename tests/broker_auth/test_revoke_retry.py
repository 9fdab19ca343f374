"""A revocation the broker did not take is retried within seconds (backoff 0.5 s .. 4 s), not
left to the next reconciliation (RECONCILE_INTERVAL_S stays at 60 s here).

broker_auth reaches Mosquitto through a proxy (control_proxy.py) so that the broker can be
made to ignore control commands while the connection stays up: no reconnection, hence no
reconciliation after a reconnect to repair the role. The second test kills Mosquitto itself.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from broker_auth.broker.control import DynsecClient
from broker_auth.broker.projector import product_rolename
from testing.broker_auth import AuthStack, credited_grant, start_auth_stack
from testing.procs import wait_for
from tests.broker_auth.control_proxy import ControlProxy
from tests.conftest import Mongo, MosquittoFactory

PASSWORD = "revoke-retry-password"
PRODUCT = "rr-live"
ROLE = product_rolename(PRODUCT)


class Setup:
    def __init__(self, stack: AuthStack, proxy: ControlProxy) -> None:
        self.stack = stack
        self.proxy = proxy
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(stack.env["MONGO_URL"], tz_aware=True)
        self.db: Database[dict[str, Any]] = self.mongo[stack.env["MONGO_DB"]]

    def buyer_with_grant(self, username: str, seconds: float) -> None:
        """A buyer whose grant ends in `seconds`, its role on the client (as a credit leaves
        it)."""
        self.stack.register(username, PASSWORD)
        self.db.grants.insert_one(credited_grant(username, PRODUCT, "live/rr/#", seconds))
        self.stack.control().add_client_role(username, ROLE)

    def grant(self, username: str) -> dict[str, Any]:
        doc = self.db.grants.find_one({"_id": f"{username}/{PRODUCT}"})
        assert doc is not None
        return doc


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    ferret: Mongo,
) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("revoke-retry")
    broker = mosquitto_factory(f"{workdir.name}-mosquitto")
    proxy = ControlProxy(broker.port)
    stack = start_auth_stack(
        workdir,
        broker,
        ferret.url,
        extra_env={"MQTT_PORT": str(proxy.port), "RECONCILE_INTERVAL_S": "60"},
    )
    wait_for(lambda: (stack.health() or {}).get("leader"), 10, "the lease")
    stack.create_product(PRODUCT, "live/rr/#", 3600)
    s = Setup(stack, proxy)
    yield s
    s.mongo.close()
    stack.close()
    proxy.close()
    broker.proc.stop()


def test_a_revocation_the_broker_ignored_is_retried_within_seconds(setup: Setup) -> None:
    username = f"rr-lost-{secrets.token_hex(2)}"
    setup.buyer_with_grant(username, 1.0)
    setup.proxy.dropping = True  # the broker stops answering control commands
    try:
        wait_for(lambda: not setup.grant(username)["active"], 10, "the grant recorded as ended")
        # The removal is lost; broker_auth gives up on it after DYNSEC_TIMEOUT_S (5 s).
        wait_for(
            lambda: "broker update deferred" in setup.stack.proc.log_text(),
            15,
            "the revocation to fail",
            0.1,
        )
        assert ROLE in (setup.stack.client_roles(username) or set())
    finally:
        setup.proxy.dropping = False
    back = time.monotonic()
    wait_for(
        lambda: ROLE not in (setup.stack.client_roles(username) or set()),
        10,
        "the role revoked by a retry",
        0.02,
    )
    took = time.monotonic() - back
    print(f"\nrevocation retried {took:.2f} s after the broker answered again")
    assert took < 6.0, f"the role outlived the broker's return by {took:.2f} s"
    assert setup.grant(username)["active"] is False
    assert setup.db.grant_syncs.count_documents({"_id": username}) == 0


def test_a_revocation_during_a_broker_outage_is_retried_when_it_returns(setup: Setup) -> None:
    username = f"rr-down-{secrets.token_hex(2)}"
    stack = setup.stack
    setup.buyer_with_grant(username, 1.5)
    if stack._control is not None:  # its own reconnection would delay our looking
        stack._control.stop()
        stack._control = None
    stack.broker.proc.kill()
    try:
        wait_for(lambda: not setup.grant(username)["active"], 10, "the grant recorded as ended")
        time.sleep(1.5)  # a few retries fail while the broker is away
    finally:
        stack.broker.proc.start()
    back = time.monotonic()
    control = DynsecClient(
        "127.0.0.1", stack.broker.port, "svc.broker-admin", stack.broker.admin_password
    )
    control.start()
    try:
        assert control.wait_ready(10)

        def revoked() -> bool:
            client = control.get_client(username) or {}
            return ROLE not in {str(r["rolename"]) for r in client.get("roles", [])}

        wait_for(revoked, 15, "the role revoked after the broker's return", 0.02)
    finally:
        control.stop()
    took = time.monotonic() - back
    print(f"\nrevocation done {took:.2f} s after Mosquitto was started again")
    assert took < 8.0, f"the role outlived the broker's return by {took:.2f} s"
    wait_for(lambda: stack.ready(), 15, "broker_auth back on the broker")
