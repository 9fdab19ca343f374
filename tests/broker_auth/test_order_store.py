"""The order record as stored, against real FerretDB (no node: nothing here asks the ledger).

- A cancel that lost its race with a payment leaves no trace: the order reads open, not
  cancelled, and keeps its unpaid place.
- Orders stored before the record existed: during a rolling upgrade a replica of the previous
  version still writes them, so the first event applied to one (not only the migration at
  start) folds in what the order already received, and the pending view its address shows.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from broker_auth.billing.order_record import (
    Cancelled,
    CancelWithdrawn,
    Expired,
    PaymentConfirmed,
    PendingSeen,
)
from broker_auth.billing.order_record import apply as real_apply
from broker_auth.billing.orders import LeaseLostError, Orders, new_tag
from broker_auth.billing.pool import DepositAddresses
from broker_auth.infra.clock import utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger.iri import IriLedger
from testing.addresses import random_address
from tests.conftest import Mongo

PRICE = 3600
APPLY = "broker_auth.billing.orders.apply"  # the pure rules, as Orders.change calls them


@pytest.fixture(scope="module")
def orders(ferret: Mongo) -> Iterator[Orders]:
    store = Store(ferret.url, f"upgrade_{secrets.token_hex(4)}")
    store.ensure_indexes()
    # No node behind this URL: nothing here may ask the ledger (an event is applied from the
    # stored documents only); a call would fail the test.
    ledger = IriLedger("http://127.0.0.1:9", timeout_s=0.5)
    pool = DepositAddresses(store, ledger, low_water=0)
    yield Orders(
        store,
        pool,
        ledger,
        payment_window_s=3600,
        max_hours=24,
        unpaid_hold_s=600,
        max_unpaid=3,
        late_payment_window_s=3600,
    )
    store.close()


def test_a_withdrawn_cancel_leaves_the_order_open_and_in_its_place(orders: Orders) -> None:
    order = legacy_order(orders)
    orders.migrate_records()
    slot = orders.slots.take("old-buyer", order["_id"])
    orders.store.orders.update_one({"_id": order["_id"]}, {"$set": {"slot": slot}})
    cancelled = orders.change(order["_id"], Cancelled(utcnow()))
    assert cancelled is not None and cancelled.status == "cancelled"
    # The pool refused the release (the watcher saw value): the cancel is withdrawn.
    reopened = orders.change(order["_id"], CancelWithdrawn(utcnow()))
    assert reopened is not None and reopened.cancelled_at is None
    stored = orders.store.orders.find_one({"_id": order["_id"]})
    assert stored is not None and "cancelled_at" not in stored
    assert orders.get("old-buyer", order["_id"]).status == "pending"
    assert [h["to"] for h in stored["history"]] == ["cancelled", "pending"]
    # Its unpaid place was not given back: a payment still counts for this order.
    assert orders.store.order_slots.find_one({"_id": slot}) is not None


def legacy_order(orders: Orders, *, pending: int = 0, seen: int = 0) -> Doc:
    """An order as the previous version stored it: no status, no state_version."""
    address = random_address()
    now = utcnow()
    doc: Doc = {
        "_id": secrets.token_hex(8),
        "username": "old-buyer",
        "product_id": "p",
        "topic_filter": "live/p/#",
        "price_iota_per_hour": PRICE,
        "hours": 1.0,
        "amount_iota": PRICE,
        "address": address,
        "tag": new_tag(),
        "created_at": now,
        "expires_at": now + dt.timedelta(hours=1),
    }
    orders.store.orders.insert_one(doc)
    orders.pool.watch.add(address, doc["_id"], now + dt.timedelta(hours=2), doc["expires_at"], 0)
    orders.pool.watch.show_pending(address, pending, seen)
    return doc


def paid(orders: Orders, order: Doc, amount: int) -> None:
    orders.store.payments.insert_one(
        {
            "_id": secrets.token_hex(8),
            "order_id": order["_id"],
            "address": order["address"],
            "amount_iota": amount,
            "confirmed_at": utcnow(),
        }
    )


def test_an_event_on_a_legacy_order_keeps_its_confirmed_payments(orders: Orders) -> None:
    order = legacy_order(orders)
    paid(orders, order, PRICE)
    record = orders.change(order["_id"], PendingSeen(0, 0, utcnow()))
    assert record is not None
    assert record.confirmed_iota == PRICE and record.status == "confirmed"
    stored = orders.store.orders.find_one({"_id": order["_id"]})
    assert stored is not None
    assert stored["confirmed_iota"] == PRICE and stored["state_version"] >= 1
    # An expiry afterwards cannot undo it either.
    orders.change(order["_id"], Expired(utcnow() + dt.timedelta(hours=2)))
    assert orders.get("old-buyer", order["_id"]).status == "confirmed"


def test_a_partly_paid_legacy_order_expires_with_what_it_received(orders: Orders) -> None:
    order = legacy_order(orders)
    paid(orders, order, 100)
    record = orders.change(order["_id"], Expired(utcnow() + dt.timedelta(hours=2)))
    assert record is not None and record.confirmed_iota == 100


def test_migration_keeps_payments_and_the_pending_view(orders: Orders) -> None:
    waiting = legacy_order(orders, pending=PRICE)
    settled = legacy_order(orders)
    paid(orders, settled, PRICE)
    assert orders.migrate_records() >= 2
    shown = orders.get("old-buyer", waiting["_id"])
    assert shown.status == "unconfirmed" and shown.paid_iota == PRICE, shown
    assert orders.get("old-buyer", settled["_id"]).status == "confirmed"
    assert orders.migrate_records() == 0  # done once


def test_a_leader_paused_after_its_read_does_not_undo_the_next_leaders_write(
    orders: Orders, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leader A reads the order and stalls (a GC pause, a slow store); B takes over and records
    the payment; A wakes and writes what it computed from its old read. An update by `_id`
    alone put the order back to unpaid for good (the payment was already credited, so nothing
    applied it again). A's write now finds the record moved and applies its event on top."""
    order = legacy_order(orders)
    orders.migrate_records()
    stalled = {"once": True}

    def apply_after_the_next_leader(before: Any, event: Any) -> Any:
        if stalled.pop("once", False):  # between A's read and A's write, B records the payment
            monkeypatch.setattr(APPLY, real_apply)
            orders.change(order["_id"], PaymentConfirmed("pay-b", PRICE, utcnow()))
            monkeypatch.setattr(APPLY, apply_after_the_next_leader)
        return real_apply(before, event)

    monkeypatch.setattr(APPLY, apply_after_the_next_leader)
    record = orders.change(order["_id"], PendingSeen(100, 0, utcnow()))  # A saw value coming
    assert record is not None and record.confirmed_iota == PRICE
    stored = orders.store.orders.find_one({"_id": order["_id"]})
    assert stored is not None
    assert stored["confirmed_iota"] == PRICE and stored["payment_ids"] == ["pay-b"]
    assert orders.get("old-buyer", order["_id"]).status == "confirmed"


def test_a_replica_without_the_lease_changes_no_order(
    orders: Orders, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = legacy_order(orders)
    orders.migrate_records()
    before = orders.store.orders.find_one({"_id": order["_id"]})
    monkeypatch.setattr(orders, "leads", lambda: False)
    with pytest.raises(LeaseLostError):
        orders.change(order["_id"], PaymentConfirmed("pay-x", PRICE, utcnow()))
    assert orders.store.orders.find_one({"_id": order["_id"]}) == before
