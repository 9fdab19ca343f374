"""At most MAX_UNPAID_ORDERS unpaid orders per buyer hold a deposit address: the cap's places.

A buyer's places are documents `order_slots/<username>#<n>`, n < the cap, each naming the order
that holds it. An order takes a place with an insert under that unique `_id` (atomic on MongoDB
and FerretDB alike, whose findAndModify is not), so concurrent orders of one buyer can never hold
more than the cap. The order record is the truth: a place is given back when its order is paid,
cancelled or lets its address go, and a place whose order is no longer unpaid (or was never
written: a crash between the two inserts) is reclaimed when the buyer is at the cap.
"""

from __future__ import annotations

import datetime as dt

from pymongo.errors import DuplicateKeyError

from broker_auth.errors import ServiceError
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store

# An order is inserted right after its place; a place this old without its order is a crash's.
ORPHAN_AFTER = dt.timedelta(seconds=60)
# Fields of an order that end its unpaid life (set by the watcher and by cancellation): paid
# in full, cancelled, or its address let go.
ENDED = ("fully_paid_at", "cancelled_at", "released_at")


class TooManyUnpaidError(ServiceError):
    status_code = 429

    def __init__(self, limit: int, detail: str | None = None) -> None:
        super().__init__(
            detail
            or f"you hold {limit} unpaid orders (MAX_UNPAID_ORDERS={limit}): pay or cancel one"
            " (DELETE /api/orders/{order_id}) before ordering again"
        )


def still_unpaid(order: Doc) -> bool:
    return not any(order.get(field) for field in ENDED)


class UnpaidSlots:
    def __init__(self, store: Store, limit: int, refusal: str | None = None) -> None:
        self.refusal = refusal  # the 429's text (default: a buyer's unpaid orders)
        self.col = store.order_slots
        self.orders = store.orders
        self.pool = store.deposit_addresses
        self.limit = limit

    def take(self, username: str, order_id: str) -> str:
        """A free place for `order_id`, or TooManyUnpaidError; returns the place's id."""
        for _round in range(2):
            for n in range(self.limit):
                slot = f"{username}#{n}"
                try:
                    self.col.insert_one({"_id": slot, "order_id": order_id, "at": utcnow()})
                    return slot
                except DuplicateKeyError:
                    continue
            if not self._reclaim(username):
                break
        raise TooManyUnpaidError(self.limit, self.refusal)

    def give_back(self, slot: str | None, order_id: str) -> None:
        if slot:
            self.col.delete_one({"_id": slot, "order_id": order_id})

    def _reclaim(self, username: str) -> bool:
        """Free the places whose orders are no longer unpaid; whether any was freed."""
        freed = False
        now = utcnow()
        for n in range(self.limit):
            slot = self.col.find_one({"_id": f"{username}#{n}"})
            if slot is None:
                freed = True  # given back meanwhile
                continue
            order = self.orders.find_one(
                {"_id": slot["order_id"]}, {**dict.fromkeys(ENDED, 1), "address": 1}
            )
            if order is None:
                stale = now - as_utc(slot["at"]) > ORPHAN_AFTER
            else:
                # A partly paid order holds its place until its address closes (a new order's
                # address may not be watched yet: only `closed` tells the watch is over).
                pool = self.pool.find_one({"_id": order.get("address")}, {"state": 1})
                closed = pool is not None and pool.get("state") in ("closed", "swept")
                stale = not still_unpaid(order) or closed
            if stale:
                gone = self.col.delete_one({"_id": slot["_id"], "order_id": slot["order_id"]})
                freed = freed or gone.deleted_count > 0
        return freed
