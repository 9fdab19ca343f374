"""Exactly-once crediting and expiry, driven in-process against real FerretDB and Mosquitto.

The end-to-end payment tests cannot stop the service between the two writes of a credit; here
the crash is reproduced by undoing the second write (the payment's `credited` flag).
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from broker_auth.clock import as_utc, utcnow
from broker_auth.db import Doc, Store
from broker_auth.dynsec import DynsecClient
from broker_auth.grants import Grants, grant_id
from broker_auth.orders import new_tag
from broker_auth.payments import Ledger, Transfer
from broker_auth.projection import Projector
from tests.conftest import Mongo, MosquittoFactory

PRICE = 3600  # 1 iota = 1 s
ADDRESS = "D" * 80 + "9"


@dataclass
class Parts:
    store: Store
    dynsec: DynsecClient
    projector: Projector
    ledger: Ledger
    grants: Grants

    def buyer(self) -> str:
        username = f"crd-{secrets.token_hex(3)}"
        self.store.accounts.insert_one({"_id": username, "password_hash": "x"})
        self.projector.ensure_buyer_client(username, "credit-password-1")
        return username

    def order(self, username: str) -> Doc:
        doc: Doc = {
            "_id": secrets.token_hex(8),
            "username": username,
            "product_id": "crd",
            "topic_filter": "live/crd/#",
            "price_iota_per_hour": PRICE,
            "hours": 1.0,
            "amount_iota": PRICE,
            "address": ADDRESS,
            "tag": new_tag(),
            "created_at": utcnow(),
            "expires_at": utcnow() + dt.timedelta(hours=1),
        }
        self.store.orders.insert_one(doc)
        return doc

    def confirmed_payment(self, order: Doc, amount: int) -> Doc:
        transfer = Transfer(
            tx_hash=secrets.token_hex(20).upper(),
            bundle_hash=secrets.token_hex(20).upper(),
            address=ADDRESS,
            tag=str(order["tag"]),
            value=amount,
            current_index=0,
        )
        payment = self.ledger.record(transfer)
        confirmed = self.ledger.mark_confirmed(str(payment["_id"]))
        assert confirmed is not None
        return confirmed

    def grant(self, username: str) -> Doc:
        doc = self.store.grants.find_one({"_id": grant_id(username, "crd")})
        assert doc is not None
        return doc

    def roles(self, username: str) -> set[str]:
        client = self.dynsec.get_client(username) or {}
        return {str(r["rolename"]) for r in client.get("roles", [])}


@pytest.fixture(scope="module")
def parts(mosquitto_factory: MosquittoFactory, ferret: Mongo) -> Iterator[Parts]:
    broker = mosquitto_factory(f"crediting-{secrets.token_hex(3)}")
    store = Store(ferret.url, f"crediting_{secrets.token_hex(4)}")
    store.ensure_indexes()
    dynsec = DynsecClient("127.0.0.1", broker.port, "svc.broker-admin", broker.admin_password)
    dynsec.start()
    assert dynsec.wait_ready(10)
    projector = Projector(store, dynsec)
    product = {"_id": "crd", "topic_filter": "live/crd/#", "price_iota_per_hour": PRICE}
    store.products.insert_one(product)
    projector.ensure_role(projector.product_role(product))
    yield Parts(store, dynsec, projector, Ledger(store), Grants(store, projector))
    dynsec.stop()
    store.close()


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
    pending = [p["_id"] for p in parts.ledger.to_credit()]
    assert one["_id"] in pending and two["_id"] in pending
    for payment in parts.ledger.to_credit():  # what the watcher does after a restart
        parts.grants.credit(payment)
    after = parts.grant(username)
    added = (as_utc(after["expires_at"]) - as_utc(before["expires_at"])).total_seconds()
    assert added == pytest.approx(30, abs=0.002)  # only the new payment
    assert sorted(after["applied_payments"]) == sorted([one["_id"], two["_id"]])
    assert parts.ledger.to_credit() == []


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


def test_reattachment_is_the_same_payment(parts: Parts) -> None:
    username = parts.buyer()
    order = parts.order(username)
    bundle = secrets.token_hex(20).upper()
    for tx in ("TXA", "TXB", "TXA"):
        parts.ledger.record(Transfer(tx, bundle, ADDRESS, str(order["tag"]), 42, 0))
    (payment,) = list(parts.store.payments.find({"bundle_hash": bundle}))
    assert payment["amount_iota"] == 42
    assert sorted(payment["tx_hashes"]) == ["TXA", "TXB"]


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
