"""Orders: how much to pay, where, and with which tag; their status follows the payments."""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import uuid
from decimal import Decimal

from pymongo.errors import DuplicateKeyError

from broker_auth.clock import as_utc, utcnow
from broker_auth.db import Doc, Store
from broker_auth.errors import InvalidError, NotFoundError
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
        self, store: Store, deposit_address: str, payment_window_s: float, max_hours: float
    ) -> None:
        self.store = store
        self.deposit_address = deposit_address
        self.payment_window = dt.timedelta(seconds=payment_window_s)
        self.max_hours = max_hours

    def create(self, username: str, product_id: str, hours: float) -> OrderCreated:
        if hours > self.max_hours:
            raise InvalidError(f"hours must be at most {self.max_hours:g}")
        product = self.store.products.find_one({"_id": product_id})
        if product is None:
            raise NotFoundError("no such product")
        price = int(product["price_iota_per_hour"])
        amount = amount_for(price, hours)
        if amount > MAX_IOTA:
            raise InvalidError("amount exceeds the IOTA supply")
        now = utcnow()
        doc: Doc = {
            "_id": uuid.uuid4().hex,
            "username": username,
            "product_id": product_id,
            "topic_filter": product["topic_filter"],
            "price_iota_per_hour": price,
            "hours": hours,
            "amount_iota": amount,
            "address": self.deposit_address,
            "created_at": now,
            "expires_at": now + self.payment_window,
        }
        for _attempt in range(5):
            doc["tag"] = new_tag()
            try:
                self.store.orders.insert_one(doc)
                break
            except DuplicateKeyError:
                continue  # 27 random trytes colliding: practically never
        else:  # pragma: no cover
            raise RuntimeError("could not allocate a unique tag")
        log.info("order %s: %s x %g h = %d iota", doc["_id"], product_id, hours, amount)
        return OrderCreated(
            order_id=doc["_id"],
            product_id=product_id,
            hours=hours,
            amount_iota=amount,
            address=self.deposit_address,
            tag=doc["tag"],
            status="pending",
            expires_at=doc["expires_at"],
        )

    def _out(self, doc: Doc, now: dt.datetime) -> OrderOut:
        paid = confirmed = 0
        for p in self.store.payments.find(
            {"order_id": doc["_id"]}, {"amount_iota": 1, "confirmed": 1}
        ):
            paid += int(p.get("amount_iota", 0))
            if p.get("confirmed"):
                confirmed += int(p.get("amount_iota", 0))
        expires_at = as_utc(doc["expires_at"])
        return OrderOut(
            order_id=str(doc["_id"]),
            product_id=str(doc["product_id"]),
            hours=float(doc["hours"]),
            amount_iota=int(doc["amount_iota"]),
            address=str(doc["address"]),
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

    def by_tag(self, tag: str) -> Doc | None:
        return self.store.orders.find_one({"tag": tag})
