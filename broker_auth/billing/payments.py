"""Payment records: each confirmed increase of a deposit address's ledger value, recorded once.

What an address received is what the ledger confirms on it, never a sum of transactions read
from the tangle. A payment covers one step of that value, from `from_iota` (what was already
accounted for on the address) to `to_iota` (the confirmed balance seen), and its `_id` is
`<address>:<from_iota>`: recording the same step twice, after a crash or from a second process,
lands on the same document. Recording then moves the address's `accounted_iota` from
`from_iota` to `to_iota` with a compare-and-set (on its watch-list entry while watched, else on
its pool document), so the next step starts where this one ended: never twice, never lost,
without transactions. Two recorders starting from the same value (the stray scan and the
watcher, two processes, a restart) produce the same id, so the first record stands.

A payment is matched when an order held the address while it was watched; value on a pool
address that no watched order holds is kept as unmatched. The bundles that paid are recorded
beside the amount as evidence for people (validated and confirmed per the ledger seam).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Protocol

from pymongo.errors import DuplicateKeyError

from broker_auth.billing.outbox import Outbox
from broker_auth.billing.pricing import price_payment
from broker_auth.infra import metrics
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.infra.events import EventWriter
from broker_auth.schemas import PaymentOut

log = logging.getLogger(__name__)


class AccountedValue(Protocol):
    """Where an address's `accounted_iota` is kept: moved from `start` to `to` once."""

    def advance_accounted(self, address: str, start: int, to: int) -> None: ...


def payment_id(address: str, from_iota: int) -> str:
    return f"{address}:{from_iota}"


class Payments:
    def __init__(
        self,
        store: Store,
        events: EventWriter | None = None,
        outbox: Outbox | None = None,
        late_payment_window_s: float = 7 * 86400.0,
    ) -> None:
        self.store = store
        self.events = events
        self.outbox = outbox
        self.late_window = dt.timedelta(seconds=late_payment_window_s)

    def record_increase(
        self,
        address_doc: Doc,
        balance: int,
        ledger_index: int,
        order: Doc | None,
        bundles: list[str],
        accounts: AccountedValue | None = None,
    ) -> Doc | None:
        """Record the step from the accounted value to `balance` (None if nothing new).

        `address_doc` holds the address's `accounted_iota`; `accounts` moves it (the watch
        list for a watched address; by default the pool document).
        """
        address = str(address_doc["_id"])
        start = int(address_doc.get("accounted_iota", 0))
        if balance <= start:
            return None
        pid = payment_id(address, start)
        doc: Doc = {
            "_id": pid,
            "address": address,
            "from_iota": start,
            "to_iota": balance,
            "amount_iota": balance - start,
            "ledger_index": ledger_index,
            "bundles": bundles,
            "confirmed_at": utcnow(),
            "matched": order is not None,
            "order_id": order["_id"] if order else None,
            "product_id": order["product_id"] if order else None,
            # A quote's payment belongs to whom its own sealed message names (sealed/claims.py).
            "username": order["username"] if order and order.get("kind") != "quote" else None,
            "credited": False,
        }
        try:
            self.store.payments.insert_one(doc)
            fresh = True
        except DuplicateKeyError:  # recorded before a crash, or by another process
            existing = self.store.payments.find_one({"_id": pid})
            if existing is None:  # pragma: no cover - deleted by hand meanwhile
                return None
            doc, fresh = existing, False
        if self.outbox is not None:
            # Before the compare-and-set below: a crash in between records it again (and this
            # upsert finds the entry, or makes it), so the store's revenue misses nothing.
            self.outbox.add_payment(doc)
        if accounts is None:
            self.store.deposit_addresses.update_one(
                {"_id": address, "accounted_iota": start},
                {"$set": {"accounted_iota": int(doc["to_iota"])}},
            )
        else:
            accounts.advance_accounted(address, start, int(doc["to_iota"]))
        if fresh:
            self._announce(doc)
        return doc

    def _announce(self, doc: Doc) -> None:
        amount = int(doc["amount_iota"])
        matched = bool(doc["matched"])
        metrics.PAYMENTS_CONFIRMED.labels("true" if matched else "false").inc()
        metrics.PAYMENT_IOTA.labels("confirmed").inc(amount)
        if matched:
            log.info(
                "payment of %d iota confirmed on %s for order %s (bundles %s)",
                amount,
                doc["address"],
                doc["order_id"],
                ",".join(doc["bundles"]) or "-",
            )
        else:
            log.warning(
                "unmatched payment of %d iota on %s (no watched order holds it): kept",
                amount,
                doc["address"],
            )

    def priced(self, payment: Doc) -> Doc:
        """The payment with what it buys (pricing.py), decided once and stored with it.

        The product's price is read when the payment is first priced (it was just confirmed)
        and kept: crediting again after a crash buys the same time.
        """
        if "grant_seconds" in payment and "refund_due_iota" in payment:
            return payment
        order = self.store.orders.find_one({"_id": payment.get("order_id")})
        if order is None:
            return payment  # grants.credit reports the missing order
        product = self.store.products.find_one(
            {"_id": order["product_id"]}, {"price_iota_per_hour": 1, "active": 1}
        )
        on_sale = product is not None and bool(product.get("active", True))
        # The quote holds inside the late window; a running grant keeps the address watched
        # longer, but value confirmed after that window buys at the price of its day.
        quote_open = (
            as_utc(payment["confirmed_at"]) <= as_utc(order["expires_at"]) + self.late_window
        )
        priced = price_payment(
            int(payment["from_iota"]),
            int(payment["to_iota"]),
            int(order.get("base_iota", 0)),
            int(order["amount_iota"]) if quote_open else 0,
            int(order["price_iota_per_hour"]),
            int(product["price_iota_per_hour"]) if product is not None and on_sale else None,
        )
        fields = priced.as_fields()
        first = self.store.payments.update_one(
            {"_id": payment["_id"], "grant_seconds": {"$exists": False}}, {"$set": fields}
        ).modified_count
        stored = self.store.payments.find_one({"_id": payment["_id"]})
        if stored is None:  # pragma: no cover - deleted by hand meanwhile
            return {**payment, **fields}
        if priced.refund_due_iota and first:
            metrics.REFUND_DUE_IOTA.inc(priced.refund_due_iota)
            log.warning(
                "payment %s: %d iota beyond order %s's amount, product %s off sale: refund due",
                payment["_id"],
                priced.refund_due_iota,
                order["_id"],
                order["product_id"],
            )
        return stored

    def seen_pending(self, address_doc: Doc, value: int) -> None:
        """A valid bundle paying a watched address is attached, not yet confirmed (shown only)."""
        order = self.store.orders.find_one({"_id": address_doc.get("order_id")}, {"product_id": 1})
        product = str(order["product_id"]) if order else ""
        metrics.PAYMENT_IOTA.labels("unconfirmed").inc(value)
        log.info(
            "payment of %d iota seen on %s, waiting for confirmation", value, address_doc["_id"]
        )
        if self.events:
            self.events.payment(product, "unconfirmed", value)

    def find(self, payment_id: str) -> Doc | None:
        return self.store.payments.find_one({"_id": payment_id})

    def assign_buyer(self, payment_id: str, username: str) -> Doc:
        """A quote's payment belongs to the buyer its sealed message named."""
        self.store.payments.update_one({"_id": payment_id}, {"$set": {"username": username}})
        stored = self.find(payment_id)
        if stored is None:  # pragma: no cover - deleted by hand meanwhile
            raise RuntimeError(f"payment {payment_id} vanished")
        return stored

    def keep_unmatched(self, payment: Doc, reason: str) -> None:
        """No buyer gets this payment (a sealed message refused): kept, shown to the seller."""
        done = self.store.payments.update_one(
            {"_id": payment["_id"], "matched": True, "credited": False},
            {"$set": {"matched": False, "unmatched_reason": reason}},
        )
        if done.modified_count:
            log.warning(
                "payment of %d iota on %s (quote %s) kept unmatched: %s",
                int(payment["amount_iota"]),
                payment["address"],
                payment.get("order_id"),
                reason,
            )

    def to_credit(self) -> list[Doc]:
        """Matched and not yet credited (what a crash left half done). Scans every payment:
        the watcher calls it at start and then every STRAY_SCAN_INTERVAL_S, not every poll."""
        return list(self.store.payments.find({"credited": False, "matched": True}))

    def confirmed_for(self, order_id: str) -> int:
        return sum(
            int(p.get("amount_iota", 0))
            for p in self.store.payments.find({"order_id": order_id}, {"amount_iota": 1})
        )

    def without_evidence(self) -> list[Doc]:
        """Payments recorded while the node could not name their bundles (scans: start only)."""
        unnamed = {"bundles": {"$size": 0}}
        return list(self.store.payments.find(unnamed, {"address": 1, "bundles": 1}))

    def add_evidence(self, payment_id: str, bundles: list[str]) -> None:
        self.store.payments.update_one(
            {"_id": payment_id}, {"$addToSet": {"bundles": {"$each": bundles}}}
        )

    def bundles_of(self, address: str) -> set[str]:
        return {
            str(b)
            for p in self.store.payments.find({"address": address}, {"bundles": 1})
            for b in p.get("bundles", [])
        }

    def list(self, limit: int, offset: int) -> list[PaymentOut]:
        docs = self.store.payments.find().sort("confirmed_at", -1).skip(offset).limit(limit)
        return [to_out(d) for d in docs]


def to_out(d: Doc) -> PaymentOut:
    return PaymentOut(
        payment_id=str(d["_id"]),
        address=str(d["address"]),
        amount_iota=int(d.get("amount_iota", 0)),
        matched=bool(d.get("matched")),
        order_id=d.get("order_id"),
        product_id=d.get("product_id"),
        username=d.get("username"),
        credited=bool(d.get("credited")),
        confirmed_at=as_utc(d["confirmed_at"]),
        ledger_index=int(d.get("ledger_index", 0)),
        bundles=[str(b) for b in d.get("bundles", [])],
        refund_due_iota=int(d.get("refund_due_iota") or 0),
        unmatched_reason=d.get("unmatched_reason"),
        grant_seconds=float(d["grant_seconds"]) if d.get("grant_seconds") is not None else None,
    )
