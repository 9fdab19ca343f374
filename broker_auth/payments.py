"""The payment ledger: every value transfer to the deposit address, matched to orders by tag.

A payment is keyed by (bundle hash, address, tag). A reattached bundle carries the same
bundle hash under new transaction hashes, so it lands on the same payment and counts once;
its transaction hashes are kept together because any of them may be the one that confirms.
Transfers whose tag matches no order are kept as unmatched payments, never dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pymongo.errors import DuplicateKeyError

from broker_auth import metrics
from broker_auth.clock import as_utc, utcnow
from broker_auth.db import Doc, Store
from broker_auth.events import EventWriter
from broker_auth.models import PaymentOut

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transfer:
    """One value transaction to the deposit address, as read from the tangle."""

    tx_hash: str
    bundle_hash: str
    address: str
    tag: str
    value: int
    current_index: int


class Ledger:
    def __init__(self, store: Store, events: EventWriter | None = None) -> None:
        self.store = store
        self.events = events

    def known_tx_hashes(self) -> set[str]:
        hashes: set[str] = set()
        for p in self.store.payments.find({}, {"tx_hashes": 1}):
            hashes.update(str(h) for h in p.get("tx_hashes", []))
        return hashes

    def record(self, t: Transfer) -> Doc:
        """Add a transaction to its payment (creating it on first sight)."""
        key = {"bundle_hash": t.bundle_hash, "address": t.address, "tag": t.tag}
        doc = self.store.payments.find_one(key)
        if doc is None:
            order = self.store.orders.find_one({"tag": t.tag})
            doc = {
                **key,
                "_id": f"{t.bundle_hash}-{t.tag}",
                "outputs": {str(t.current_index): t.value},
                "amount_iota": t.value,
                "tx_hashes": [t.tx_hash],
                "first_seen": utcnow(),
                "confirmed": False,
                "confirmed_at": None,
                "credited": False,
                "matched": order is not None,
                "order_id": order["_id"] if order else None,
                "product_id": order["product_id"] if order else None,
                "username": order["username"] if order else None,
            }
            try:
                self.store.payments.insert_one(doc)
            except DuplicateKeyError:
                doc = self.store.payments.find_one(key) or doc
            else:
                matched = "true" if order else "false"
                metrics.PAYMENTS_SEEN.labels(matched).inc()
                metrics.PAYMENT_IOTA.labels("seen").inc(t.value)
                if order is None:
                    log.warning(
                        "unmatched payment of %d iota with tag %s (bundle %s): kept as unmatched",
                        t.value,
                        t.tag,
                        t.bundle_hash,
                    )
                else:
                    log.info(
                        "payment of %d iota seen for order %s (bundle %s)",
                        t.value,
                        order["_id"],
                        t.bundle_hash,
                    )
                if self.events:
                    self.events.payment(doc["product_id"] or "", "unconfirmed", t.value)
                return doc
        outputs = dict(doc.get("outputs", {}))
        outputs[str(t.current_index)] = t.value
        amount = sum(int(v) for v in outputs.values())
        self.store.payments.update_one(
            {"_id": doc["_id"]},
            {
                "$addToSet": {"tx_hashes": t.tx_hash},
                "$set": {f"outputs.{t.current_index}": t.value, "amount_iota": amount},
            },
        )
        if t.tx_hash not in doc.get("tx_hashes", []):
            log.info("payment %s: reattachment %s (counted once)", doc["_id"], t.tx_hash)
        doc["amount_iota"] = amount
        return doc

    def unconfirmed(self) -> list[Doc]:
        return list(self.store.payments.find({"confirmed": False}, {"tx_hashes": 1}))

    def mark_confirmed(self, payment_id: str) -> Doc | None:
        """Mark confirmed once; returns the payment if this call confirmed it."""
        now = utcnow()
        r = self.store.payments.update_one(
            {"_id": payment_id, "confirmed": False},
            {"$set": {"confirmed": True, "confirmed_at": now}},
        )
        if not r.modified_count:
            return None
        doc = self.store.payments.find_one({"_id": payment_id})
        if doc is None:  # pragma: no cover - deleted by hand meanwhile
            return None
        amount = int(doc.get("amount_iota", 0))
        metrics.PAYMENTS_CONFIRMED.labels("true" if doc.get("matched") else "false").inc()
        metrics.PAYMENT_IOTA.labels("confirmed").inc(amount)
        log.info("payment %s confirmed: %d iota", payment_id, amount)
        if self.events:
            self.events.payment(str(doc.get("product_id") or ""), "confirmed", amount)
        return doc

    def to_credit(self) -> list[Doc]:
        """Confirmed, matched and not yet credited (also what a crash left half done)."""
        return list(
            self.store.payments.find({"confirmed": True, "credited": False, "matched": True})
        )

    def list(self, limit: int, offset: int) -> list[PaymentOut]:
        docs = self.store.payments.find().sort("first_seen", -1).skip(offset).limit(limit)
        return [to_out(d) for d in docs]


def to_out(d: Doc) -> PaymentOut:
    confirmed_at = d.get("confirmed_at")
    return PaymentOut(
        payment_id=str(d["_id"]),
        bundle_hash=str(d["bundle_hash"]),
        address=str(d["address"]),
        tag=str(d["tag"]),
        amount_iota=int(d.get("amount_iota", 0)),
        matched=bool(d.get("matched")),
        order_id=d.get("order_id"),
        product_id=d.get("product_id"),
        username=d.get("username"),
        confirmed=bool(d.get("confirmed")),
        credited=bool(d.get("credited")),
        first_seen=as_utc(d["first_seen"]),
        confirmed_at=as_utc(confirmed_at) if confirmed_at else None,
        tx_hashes=[str(h) for h in d.get("tx_hashes", [])],
    )
