"""Exactly-once recording and crediting, and expiry, in-process against real FerretDB and Mosquitto.

The end-to-end payment tests cannot stop the service between two writes; here each crash is
reproduced by undoing the later write (the address's `accounted_iota`, the payment's
`credited` flag) and running the step again, as the watcher does after a restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from broker_auth.access.grants import Grants, Notify, grant_id
from broker_auth.billing.orders import new_tag
from broker_auth.billing.payments import Payments, payment_id
from broker_auth.broker.control import DynsecClient
from broker_auth.broker.projector import Projector
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger import ternary
from tests.conftest import Mongo, MosquittoFactory
from tests.store_commands import store_commands

PRICE = 3600  # 1 iota = 1 s


def new_address() -> str:
    return "".join(secrets.choice(ternary.ALPHABET) for _ in range(80)) + "9"


@dataclass
class Parts:
    store: Store
    dynsec: DynsecClient
    projector: Projector
    payments: Payments
    grants: Grants

    def buyer(self) -> str:
        username = f"crd-{secrets.token_hex(3)}"
        self.store.accounts.insert_one({"_id": username, "password_hash": "x"})
        self.projector.ensure_buyer_client(username, "credit-password-1")
        return username

    def order(self, username: str) -> Doc:
        address = new_address()
        doc: Doc = {
            "_id": secrets.token_hex(8),
            "username": username,
            "product_id": "crd",
            "topic_filter": "live/crd/#",
            "price_iota_per_hour": PRICE,
            "hours": 1.0,
            "amount_iota": PRICE,
            "address": address,
            "tag": new_tag(),
            "created_at": utcnow(),
            "expires_at": utcnow() + dt.timedelta(hours=1),
            "watch_until": utcnow() + dt.timedelta(hours=2),
        }
        self.store.orders.insert_one(doc)
        self.store.deposit_addresses.insert_one(
            {"_id": address, "state": "assigned", "order_id": doc["_id"], "accounted_iota": 0}
        )
        return doc

    def address_doc(self, order: Doc) -> Doc:
        doc = self.store.deposit_addresses.find_one({"_id": order["address"]})
        assert doc is not None
        return doc

    def confirmed_payment(self, order: Doc, amount: int) -> Doc:
        """The ledger now shows `amount` more on the order's address: record that step."""
        doc = self.address_doc(order)
        balance = int(doc["accounted_iota"]) + amount
        payment = self.payments.record_increase(doc, balance, 1, order, [])
        assert payment is not None
        return payment

    def grant(self, username: str) -> Doc:
        doc = self.store.grants.find_one({"_id": grant_id(username, "crd")})
        assert doc is not None
        return doc

    def roles(self, username: str) -> set[str]:
        client = self.dynsec.get_client(username) or {}
        return {str(r["rolename"]) for r in client.get("roles", [])}


def shop_parts(store: Store, dynsec: DynsecClient, notify: Notify | None = None) -> Parts:
    """Crediting's parts on `store`, with the product `crd` (its role made on the broker)."""
    store.ensure_indexes()
    projector = Projector(store, dynsec)
    product = {"_id": "crd", "topic_filter": "live/crd/#", "price_iota_per_hour": PRICE}
    store.products.insert_one(product)
    projector.ensure_role(projector.product_role(product))
    grants = Grants(store, projector, notify=notify)
    return Parts(store, dynsec, projector, Payments(store), grants)


@contextlib.contextmanager
def running_parts(mosquitto_factory: MosquittoFactory, ferret: Mongo, name: str) -> Iterator[Parts]:
    """Crediting's parts on a broker and a database of their own."""
    broker = mosquitto_factory(f"{name}-{secrets.token_hex(3)}")
    store = Store(ferret.url, f"{name}_{secrets.token_hex(4)}")
    dynsec = DynsecClient("127.0.0.1", broker.port, "svc.broker-admin", broker.admin_password)
    dynsec.start()
    assert dynsec.wait_ready(10)
    try:
        yield shop_parts(store, dynsec)
    finally:
        dynsec.stop()
        store.close()


@pytest.fixture(scope="module")
def parts(mosquitto_factory: MosquittoFactory, ferret: Mongo) -> Iterator[Parts]:
    with running_parts(mosquitto_factory, ferret, "crediting") as parts:
        yield parts


def test_crediting_twice_counts_once(parts: Parts) -> None:
    username = parts.buyer()
    payment = parts.confirmed_payment(parts.order(username), 100)
    parts.grants.credit(payment)
    first = parts.grant(username)
    assert "product.crd" in parts.roles(username)
    parts.grants.credit(payment)
    again = parts.grant(username)
    assert again["expires_at"] == first["expires_at"]
    assert again["applied_payments"] == [payment["_id"]]
    length = (as_utc(first["expires_at"]) - as_utc(first["starts_at"])).total_seconds()
    assert length == pytest.approx(100, abs=0.002)


def test_crash_between_the_two_writes_neither_loses_nor_doubles(parts: Parts) -> None:
    username = parts.buyer()
    order = parts.order(username)
    one = parts.confirmed_payment(order, 50)
    parts.grants.credit(one)
    # Crash after the grant was extended but before the payment was flagged credited.
    parts.store.payments.update_one({"_id": one["_id"]}, {"$set": {"credited": False}})
    two = parts.confirmed_payment(order, 30)
    before = parts.grant(username)
    pending = [p["_id"] for p in parts.payments.to_credit()]
    assert one["_id"] in pending and two["_id"] in pending
    for payment in parts.payments.to_credit():  # what the watcher does after a restart
        parts.grants.credit(payment)
    after = parts.grant(username)
    added = (as_utc(after["expires_at"]) - as_utc(before["expires_at"])).total_seconds()
    assert added == pytest.approx(30, abs=0.002)  # only the new payment
    assert sorted(after["applied_payments"]) == sorted([one["_id"], two["_id"]])
    assert [p for p in parts.payments.to_credit() if p["order_id"] == order["_id"]] == []


def test_concurrent_credits_stack_exactly(parts: Parts) -> None:
    username = parts.buyer()
    order = parts.order(username)
    paid = [parts.confirmed_payment(order, 10 + i) for i in range(6)]
    threads = [threading.Thread(target=parts.grants.credit, args=(p,)) for p in paid]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    grant = parts.grant(username)
    length = (as_utc(grant["expires_at"]) - as_utc(grant["starts_at"])).total_seconds()
    assert length == pytest.approx(sum(10 + i for i in range(6)), abs=0.01)
    assert len(grant["applied_payments"]) == 6


def test_the_same_ledger_step_is_recorded_once(parts: Parts) -> None:
    order = parts.order(parts.buyer())
    doc = parts.address_doc(order)
    first = parts.payments.record_increase(doc, 40, 7, order, [])
    # A second process (or the same after a crash) read the address before the first moved it.
    again = parts.payments.record_increase(doc, 40, 7, order, [])
    assert first is not None and again is not None and again["_id"] == first["_id"]
    assert parts.store.payments.count_documents({"address": order["address"]}) == 1
    assert parts.address_doc(order)["accounted_iota"] == 40
    # Nothing new on the ledger: nothing recorded.
    assert parts.payments.record_increase(parts.address_doc(order), 40, 8, order, []) is None


def test_crash_between_recording_and_moving_the_address_loses_nothing(parts: Parts) -> None:
    order = parts.order(parts.buyer())
    doc = parts.address_doc(order)
    parts.payments.record_increase(doc, 25, 3, order, [])
    # Crash after the payment insert, before accounted_iota moved.
    parts.store.deposit_addresses.update_one(
        {"_id": order["address"]}, {"$set": {"accounted_iota": 0}}
    )
    # Meanwhile a second payment of 10 confirmed: the ledger shows 35.
    stale = parts.address_doc(order)
    redo = parts.payments.record_increase(stale, 35, 4, order, [])
    assert redo is not None and redo["_id"] == payment_id(order["address"], 0)
    assert redo["amount_iota"] == 25  # the step recorded before the crash, unchanged
    rest = parts.payments.record_increase(parts.address_doc(order), 35, 4, order, [])
    assert rest is not None and rest["amount_iota"] == 10 and rest["from_iota"] == 25
    amounts = [p["amount_iota"] for p in parts.store.payments.find({"address": order["address"]})]
    assert sorted(amounts) == [10, 25]
    assert parts.payments.confirmed_for(str(order["_id"])) == 35


def test_concurrent_recorders_of_one_address_agree(parts: Parts) -> None:
    order = parts.order(parts.buyer())
    doc = parts.address_doc(order)
    results: list[Doc | None] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(parts.payments.record_increase(doc, 60, 9, order, []))
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {str(r["_id"]) for r in results if r} == {payment_id(order["address"], 0)}
    assert parts.payments.confirmed_for(str(order["_id"])) == 60


def test_expiry_revokes_and_a_later_payment_starts_now(parts: Parts) -> None:
    username = parts.buyer()
    order = parts.order(username)
    parts.grants.credit(parts.confirmed_payment(order, 1))  # 1 s
    assert "product.crd" in parts.roles(username)
    time.sleep(1.1)
    assert parts.grants.expire_due() >= 1
    assert not parts.grant(username)["active"]
    assert "product.crd" not in parts.roles(username)
    parts.grants.credit(parts.confirmed_payment(order, 5))
    grant = parts.grant(username)
    assert grant["active"] and "product.crd" in parts.roles(username)
    remaining = (as_utc(grant["expires_at"]) - utcnow()).total_seconds()
    assert 4 < remaining <= 5


def test_one_expiry_pass_reads_the_grants_once_revokes_the_ended_and_tells_each_end_once(
    parts: Parts, ferret: Mongo
) -> None:
    """The expiry loop runs at least once a second: its four grant queries a pass were a share
    of a saturated FerretDB in the chaos soak. One read now serves the whole pass."""
    store = Store(ferret.url, f"expiry_{secrets.token_hex(4)}")
    try:
        told: list[tuple[str, str, dt.datetime]] = []
        mine = shop_parts(store, parts.dynsec, lambda u, e, _p, at: told.append((u, e, at)))
        grants = mine.grants
        ended, ending, later = mine.buyer(), mine.buyer(), mine.buyer()
        grants.credit(mine.confirmed_payment(mine.order(ended), 1))
        ending_order = mine.order(ending)
        grants.credit(mine.confirmed_payment(ending_order, 30))
        grants.credit(mine.confirmed_payment(mine.order(later), 600))
        time.sleep(1.1)
        told.clear()  # what crediting announced

        reads = store_commands("find", "grants")
        due = grants.expiry_pass(notice_s=60)
        assert store_commands("find", "grants") - reads == 1
        assert not mine.grant(ended)["active"] and "product.crd" not in mine.roles(ended)
        assert [(u, e) for u, e, _ in told] == [(ended, "grant_ended"), (ending, "grant_ending")]
        # Next due: the earliest end (ending's, ~29 s), before later's notice (~540 s).
        assert due == as_utc(mine.grant(ending)["expires_at"])

        told.clear()
        assert grants.expiry_pass(notice_s=60) == due
        assert told == [], "each end is told once"
        grants.credit(mine.confirmed_payment(ending_order, 20))  # extended: a new end to tell
        told.clear()
        grants.expiry_pass(notice_s=60)
        new_end = as_utc(mine.grant(ending)["expires_at"])
        assert [(u, e, as_utc(at)) for u, e, at in told] == [(ending, "grant_ending", new_end)]
    finally:
        store.client.drop_database(store.db.name)
        store.close()


def test_a_grant_extended_after_the_expiry_pass_read_it_is_not_revoked(parts: Parts) -> None:
    """The pass reads the grants, then revokes the ended ones: a credit in between wins."""
    username = parts.buyer()
    order = parts.order(username)
    parts.grants.credit(parts.confirmed_payment(order, 1))
    time.sleep(1.1)
    read_by_the_pass = [parts.grant(username)]  # ended, as the pass saw it
    parts.grants.credit(parts.confirmed_payment(order, 30))
    assert parts.grants.expire_due(read_by_the_pass) == 0
    assert parts.grant(username)["active"] and "product.crd" in parts.roles(username)
