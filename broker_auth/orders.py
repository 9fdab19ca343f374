"""Orders: how much to pay, to which address of the pool, and the tag wallets may show.

Each order holds its own deposit address (addresses.py); what it was paid is derived from the
payment records of that address (payments.py), never kept twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import uuid
from decimal import Decimal

from pymongo.errors import DuplicateKeyError

from broker_auth.addresses import AddressTakenError, DepositAddresses
from broker_auth.clock import as_utc, utcnow
from broker_auth.db import Doc, Store
from broker_auth.errors import ConflictError, InvalidError, NotFoundError
from broker_auth.models import MAX_IOTA, OrderCreated, OrderOut, OrderStatus

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
        payment_window_s: float,
        max_hours: float,
        late_payment_window_s: float,
    ) -> None:
        self.store = store
        self.pool = pool
        self.payment_window = dt.timedelta(seconds=payment_window_s)
        self.late_window = dt.timedelta(seconds=late_payment_window_s)
        self.max_hours = max_hours

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
        now = utcnow()
        expires_at = now + self.payment_window
        watch_until = expires_at + self.late_window
        doc: Doc = {
            "_id": uuid.uuid4().hex,
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

        def insert(address: str) -> None:
            doc["address"] = address
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

        address = self.pool.take(insert, doc["_id"], watch_until, expires_at)
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
        return OrderOut(
            order_id=str(doc["_id"]),
            product_id=str(doc["product_id"]),
            hours=float(doc["hours"]),
            amount_iota=int(doc["amount_iota"]),
            address=str(doc.get("address") or doc.get("legacy_address", "")),
            tag=str(doc["tag"]),
            status=status_of(paid, confirmed, expires_at, now),
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
