"""Orders: how much to pay, to which address of the pool, and the tag wallets may show.

Each order holds its own deposit address (addresses.py); what it was paid is derived from the
payment records of that address (payments.py), never kept twice. Addresses are the seller's
finite resource, so an order costs the orderer first: a buyer holds at most MAX_UNPAID_ORDERS
unpaid orders (unpaid.py), may cancel one that received nothing, and an order never paid holds
its address UNPAID_HOLD_S after its payment window, then lets it go (the watcher does that).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import uuid
from decimal import Decimal

from pymongo.errors import DuplicateKeyError

from broker_auth.api.schemas import MAX_IOTA, OrderCreated, OrderOut, OrderStatus
from broker_auth.billing.pool import AddressTakenError, DepositAddresses
from broker_auth.billing.unpaid import UnpaidSlots
from broker_auth.errors import ConflictError, InvalidError, NotFoundError, UnavailableError
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger import Ledger, LedgerUnavailableError

log = logging.getLogger(__name__)

TRYTES = "9ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TAG_LENGTH = 27


def new_tag() -> str:
    return "".join(secrets.choice(TRYTES) for _ in range(TAG_LENGTH))


def amount_for(price_iota_per_hour: int, hours: float) -> int:
    """ceil(price * hours) in exact decimal arithmetic: 500 * 0.1 is 50, not 51."""
    return math.ceil(Decimal(price_iota_per_hour) * Decimal(repr(hours)))


def status_of(paid: int, confirmed: int, expires_at: dt.datetime, now: dt.datetime) -> OrderStatus:
    if confirmed > 0:
        return "confirmed"
    if paid > 0:
        return "unconfirmed"
    return "expired" if now >= expires_at else "pending"


class Orders:
    def __init__(
        self,
        store: Store,
        pool: DepositAddresses,
        ledger: Ledger,
        payment_window_s: float,
        max_hours: float,
        unpaid_hold_s: float,
        max_unpaid: int,
        late_payment_window_s: float,
        min_amount_iota: int = 1,
    ) -> None:
        self.store = store
        self.pool = pool
        self.ledger = ledger
        self.payment_window = dt.timedelta(seconds=payment_window_s)
        # Until paid, an order's address is watched this long after its window (the watcher
        # extends it to the late-payment window once a payment is confirmed).
        self.unpaid_hold = dt.timedelta(seconds=unpaid_hold_s)
        self.late_window = dt.timedelta(seconds=late_payment_window_s)
        self.min_amount = min_amount_iota
        self.max_hours = max_hours
        self.slots = UnpaidSlots(store, max_unpaid)

    def create(self, username: str, product_id: str, hours: float) -> OrderCreated:
        if hours > self.max_hours:
            raise InvalidError(f"hours must be at most {self.max_hours:g}")
        product = self.store.products.find_one({"_id": product_id})
        if product is None:
            raise NotFoundError("no such product")
        if not product.get("active", True):
            raise ConflictError("this product is not on sale")
        price = int(product["price_iota_per_hour"])
        amount = amount_for(price, hours)
        if amount > MAX_IOTA:
            raise InvalidError("amount exceeds the IOTA supply")
        if amount < self.min_amount:
            # The seller decides what an address is worth holding for (MIN_ORDER_IOTA).
            raise InvalidError(
                f"the smallest order is {self.min_amount} iota (MIN_ORDER_IOTA): this one is"
                f" {amount} ({price} iota per hour); order more hours"
            )
        now = utcnow()
        expires_at = now + self.payment_window
        watch_until = expires_at + self.unpaid_hold
        order_id = uuid.uuid4().hex
        slot = self.slots.take(username, order_id)
        doc: Doc = {
            "_id": order_id,
            "slot": slot,
            "username": username,
            "product_id": product_id,
            "topic_filter": product["topic_filter"],
            "price_iota_per_hour": price,
            "hours": hours,
            "amount_iota": amount,
            "created_at": now,
            "expires_at": expires_at,
            "watch_until": watch_until,
        }

        def insert(address: str, accounted: int) -> None:
            doc["address"] = address
            doc["base_iota"] = accounted  # the order's value starts above what was there
            for _attempt in range(5):
                doc["tag"] = new_tag()
                try:
                    self.store.orders.insert_one(doc)
                    return
                except DuplicateKeyError:
                    # FerretDB does not say which unique index refused: look.
                    if self.store.orders.find_one({"address": address}, {"_id": 1}) is not None:
                        raise AddressTakenError(address) from None
                    continue  # 27 random trytes colliding: practically never
            raise RuntimeError("could not allocate a unique tag")  # pragma: no cover

        try:
            address = self.pool.take(insert, order_id, watch_until, expires_at)
        except BaseException:
            self.slots.give_back(slot, order_id)
            raise
        log.info(
            "order %s: %s x %g h = %d iota to %s", doc["_id"], product_id, hours, amount, address
        )
        return OrderCreated(
            order_id=doc["_id"],
            product_id=product_id,
            hours=hours,
            amount_iota=amount,
            address=address,
            tag=doc["tag"],
            status="pending",
            expires_at=expires_at,
        )

    def paid(self, order: Doc, address: str, paid_iota: int) -> None:
        """A confirmed payment for `order` was recorded (`paid_iota` confirmed in all): its
        address is watched for the late-payment window (not just the unpaid hold), and once the
        ordered amount is paid the order no longer counts against the unpaid cap (a dust
        payment does not free the buyer's place)."""
        if not order.get("paid_at"):
            first = self.store.orders.update_one(
                {"_id": order["_id"], "paid_at": {"$exists": False}},
                {"$set": {"paid_at": utcnow()}},
            )
            if first.modified_count:
                # The late window replaces the unpaid hold (shorter or longer); the grant it
                # buys extends it further (watcher).
                self.pool.set_watch(address, as_utc(order["expires_at"]) + self.late_window)
        if paid_iota >= int(order["amount_iota"]) and not order.get("fully_paid_at"):
            self.store.orders.update_one(
                {"_id": order["_id"], "fully_paid_at": {"$exists": False}},
                {"$set": {"fully_paid_at": utcnow()}},
            )
            self.slots.give_back(order.get("slot"), str(order["_id"]))

    def cancel(self, username: str, order_id: str) -> None:
        """Cancel an unpaid order of `username`: its address is free again at once.

        Refused (409) once anything arrived, confirmed or pending: the ledger is asked, not
        only the watcher's last poll, so a payment on its way is never cut off from its order.
        """
        doc = self.store.orders.find_one({"_id": order_id})
        if doc is None or doc.get("username") != username:
            raise NotFoundError("no such order")
        if doc.get("cancelled_at") and doc.get("released_at"):
            return  # cancelled before: nothing more to do
        if doc.get("paid_at") or doc.get("released_at") or not doc.get("address"):
            raise ConflictError("this order received a payment or has expired: it stays")
        address = str(doc["address"])
        base = int(doc.get("base_iota", 0))
        # Bundles that paid the address before this order held it are not this order's (only
        # an address that came back to the pool has any: the payments are read for it only).
        earlier = {
            str(b)
            for p in (
                self.store.payments.find({"address": address}, {"bundles": 1}) if base else []
            )
            for b in p.get("bundles", [])
        }
        try:
            balance = self.ledger.confirmed_balances([address]).values.get(address, 0)
            # Confirmed ones count too: the balance lags inclusion states by a milestone.
            arriving = [
                b for b in self.ledger.bundles_paying([address]) if b.bundle_hash not in earlier
            ]
        except LedgerUnavailableError as exc:
            raise UnavailableError(
                "the IOTA node is unavailable: cannot tell whether a payment is on its way"
            ) from exc
        if balance > base or arriving:
            raise ConflictError("a payment to this order arrived or is on its way: it stays")
        marked = self.store.orders.update_one(
            {"_id": order_id, "paid_at": {"$exists": False}}, {"$set": {"cancelled_at": utcnow()}}
        )
        if not marked.matched_count:
            raise ConflictError("a payment to this order arrived: it stays")
        if not self.pool.release(address, order_id):
            # The watcher recorded value meanwhile: the payment wins.
            self.store.orders.update_one({"_id": order_id}, {"$unset": {"cancelled_at": ""}})
            raise ConflictError("a payment to this order arrived: it stays")
        self.slots.give_back(doc.get("slot"), order_id)
        log.info("order %s cancelled by its buyer; address %s free again", order_id, address)

    def _out(self, doc: Doc, now: dt.datetime) -> OrderOut:
        confirmed = sum(
            int(p.get("amount_iota", 0))
            for p in self.store.payments.find({"order_id": doc["_id"]}, {"amount_iota": 1})
        )
        held = self.store.watchlist.find_one(
            {"_id": doc.get("address")},
            {"pending_iota": 1, "confirmed_seen_iota": 1, "order_id": 1},
        )
        mine = held is not None and held["order_id"] == doc["_id"]
        pending = int(held.get("pending_iota", 0)) if held and mine else 0
        # Two views of one payment that lag each other by a milestone either way: the ledger's
        # balance (`confirmed`, recorded payments) and the bundles paying the address, confirmed
        # by inclusion state (`seen`) or not (`pending`). The larger view: never a step back, and
        # a bundle the balance already shows but its inclusion state not yet is not counted
        # twice (max(confirmed, seen) + pending did, for seconds under load).
        seen = int(held.get("confirmed_seen_iota", 0)) if held and mine else 0
        paid = max(confirmed, seen + pending)
        expires_at = as_utc(doc["expires_at"])
        status = status_of(paid, confirmed, expires_at, now)
        if doc.get("cancelled_at") and confirmed == 0:
            status = "cancelled"
        return OrderOut(
            order_id=str(doc["_id"]),
            product_id=str(doc["product_id"]),
            hours=float(doc["hours"]),
            amount_iota=int(doc["amount_iota"]),
            address=str(
                doc.get("released_address") or doc.get("address") or doc.get("legacy_address", "")
            ),
            tag=str(doc["tag"]),
            status=status,
            expires_at=expires_at,
            paid_iota=paid,
            confirmed_iota=confirmed,
            price_iota_per_hour=int(doc["price_iota_per_hour"]),
            created_at=as_utc(doc["created_at"]),
        )

    def get(self, username: str, order_id: str) -> OrderOut:
        """The order if `username` owns it; anyone else learns nothing (404)."""
        doc = self.store.orders.find_one({"_id": order_id})
        if doc is None or doc.get("username") != username:
            raise NotFoundError("no such order")
        return self._out(doc, utcnow())

    def list_for(self, username: str, limit: int = 100) -> list[OrderOut]:
        now = utcnow()
        docs = self.store.orders.find({"username": username}).sort("created_at", -1).limit(limit)
        return [self._out(d, now) for d in docs]
