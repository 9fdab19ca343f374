"""Orders: how much to pay, to which address of the pool, and the tag wallets may show.

The order is the central record: its status and amounts are stored on it and moved only by
`order_record.apply` (events from the watcher and the buyer's cancel), so what the buyer reads
is what is stored. Each order holds its own deposit address (pool.py). Addresses are the
seller's finite resource, so an order costs the orderer first: a buyer holds at most
MAX_UNPAID_ORDERS unpaid orders (unpaid.py), may cancel one that received nothing, and an
order never paid holds its address UNPAID_HOLD_S after its payment window, then lets it go
(the watcher does that).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal

from pymongo.errors import DuplicateKeyError

from broker_auth.billing.order_record import (
    Cancelled,
    CancelWithdrawn,
    Effect,
    Expired,
    FreeUnpaidPlace,
    OrderEvent,
    OrderRecord,
    PaymentConfirmed,
    PendingSeen,
    StatusChanged,
    WatchThroughLateWindow,
    WindowClosed,
    apply,
    current,
)
from broker_auth.billing.pool import AddressTakenError, DepositAddresses
from broker_auth.billing.unpaid import UnpaidSlots
from broker_auth.errors import ConflictError, InvalidError, NotFoundError, UnavailableError
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger import Ledger, LedgerUnavailableError
from broker_auth.ledger.ternary import ALPHABET as TRYTES
from broker_auth.schemas import MAX_IOTA, OrderCreated, OrderOut, QuoteCreated, QuoteOut
from broker_auth.sealed.claims import secret_hash

log = logging.getLogger(__name__)

TAG_LENGTH = 27


def new_tag() -> str:
    return "".join(secrets.choice(TRYTES) for _ in range(TAG_LENGTH))


def amount_for(price_iota_per_hour: int, hours: float) -> int:
    """ceil(price * hours) in exact decimal arithmetic: 500 * 0.1 is 50, not 51."""
    return math.ceil(Decimal(price_iota_per_hour) * Decimal(repr(hours)))


class LeaseLostError(UnavailableError):
    """This replica stopped leading between reading an order and writing it: the new leader
    applies the event again (the watcher's events are idempotent; a cancel is asked again)."""


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
        max_unpaid_quotes: int = 3,
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
        # Whether this replica holds the payments lease (service.py sets the leader's): an
        # order's record is the leader's to change.
        self.leads: Callable[[], bool] = lambda: True
        self.quote_slots = UnpaidSlots(
            store,
            max_unpaid_quotes,
            f"this address holds {max_unpaid_quotes} unpaid quotes (MAX_UNPAID_QUOTES): pay one"
            " or let it expire before asking again",
        )

    def create(self, username: str, product_id: str, hours: float) -> OrderCreated:
        return self._open(username, self.slots, username, product_id, hours, {})

    def create_quote(self, client: str, product_id: str, hours: float) -> QuoteCreated:
        """An order without an account (a sealed purchase): capped per client address; its
        buyer is named by the sealed message of the payment (sealed/claims.py)."""
        secret = secrets.token_urlsafe(24)
        order = self._open(
            None,
            self.quote_slots,
            f"@quote:{client}",  # never a username (they have no '@')
            product_id,
            hours,
            {"kind": "quote", "quote_secret_hash": secret_hash(secret)},
        )
        return QuoteCreated(
            quote_id=order.order_id,
            address=order.address,
            tag=order.tag,
            amount_iota=order.amount_iota,
            expires_at=order.expires_at,
            quote_secret=secret,
        )

    def _open(
        self,
        username: str | None,
        slots: UnpaidSlots,
        slot_key: str,
        product_id: str,
        hours: float,
        extra: Doc,
    ) -> OrderCreated:
        product, price, amount = self._quote(product_id, hours)
        now = utcnow()
        expires_at = now + self.payment_window
        watch_until = expires_at + self.unpaid_hold
        order_id = uuid.uuid4().hex
        slot = slots.take(slot_key, order_id)
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
            **extra,
            **stored_fields(OrderRecord(amount, expires_at)),
            "state_version": 1,
        }
        try:
            address = self.pool.take(
                lambda address, accounted: self._insert(doc, address, accounted),
                order_id,
                watch_until,
                expires_at,
            )
        except BaseException:
            slots.give_back(slot, order_id)
            raise
        log.info(
            "%s %s: %s x %g h = %d iota to %s",
            extra.get("kind", "order"),
            order_id,
            product_id,
            hours,
            amount,
            address,
        )
        return OrderCreated(
            order_id=order_id,
            product_id=product_id,
            hours=hours,
            amount_iota=amount,
            address=address,
            tag=doc["tag"],
            status="pending",
            expires_at=expires_at,
        )

    def _quote(self, product_id: str, hours: float) -> tuple[Doc, int, int]:
        """The product on sale, its price and the amount for `hours`, or a 4xx why not."""
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
        return product, price, amount

    def _insert(self, doc: Doc, address: str, accounted: int) -> None:
        """Insert the order holding `address`: the unique index makes the hand-out atomic."""
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

    # -- the record's events (watcher, cancel) -----------------------------------------------
    def payment_confirmed(self, order_id: str, payment: Doc) -> None:
        """A confirmed payment for the order was recorded (idempotent by payment id)."""
        amount = int(payment["amount_iota"])
        self.change(order_id, PaymentConfirmed(str(payment["_id"]), amount, utcnow()))

    def pending_seen(self, order_id: str, pending_iota: int, seen_iota: int) -> None:
        self.change(order_id, PendingSeen(pending_iota, seen_iota, utcnow()))

    def window_closed(self, order_id: str) -> None:
        self.change(order_id, WindowClosed(utcnow()))

    def expire(self, order_ids: Iterable[str]) -> None:
        """Store `expired` on orders whose window passed (the view shows it already)."""
        now = utcnow()
        for order_id in order_ids:
            self.change(order_id, Expired(now))

    def change(self, order_id: str, event: OrderEvent) -> OrderRecord | None:
        """Apply `event` to the stored record and carry out the effects; None if there is no
        such order.

        After its creation an order has one writer, the leader's payment watcher (cancels too
        go through it, billing/cancels.py), so the update is by `_id`: a compare-and-set on
        `state_version` cost a scan of the collection per write on FerretDB 1.24 (80 ms against
        22 ms with 2,000 orders, bench/store_shapes.py) and did not stop two simultaneous
        writers there either. What it did stop is a leader paused between its read and its
        write while another took over: so the lease is checked, and the version read again by
        `_id`, right before the write; a record that moved is read and applied again (events
        are idempotent)."""
        for _attempt in range(20):
            doc = self.store.orders.find_one({"_id": order_id})
            if doc is None:
                return None
            # An order stored before the record existed (a replica of the previous version
            # still writes them during a rolling upgrade) starts from its payments.
            before = record_of(doc) if "state_version" in doc else self._legacy_record(doc)
            after, effects = apply(before, event)
            if after == before and "state_version" in doc:
                return after
            version = doc.get("state_version")
            update: Doc = {"$set": {**stored_fields(after), "state_version": int(version or 0) + 1}}
            # A date the event cleared (a withdrawn cancel's cancelled_at) leaves the document.
            cleared = {n: "" for n in RECORD_DATES if getattr(after, n) is None and n in doc}
            if cleared:
                update["$unset"] = cleared
            moves = [_history(e) for e in effects if isinstance(e, StatusChanged)]
            if moves:
                update["$push"] = {"history": {"$each": moves}}
            if not self.leads():
                raise LeaseLostError("payments lease not held: the order is the leader's")
            current = self.store.orders.find_one({"_id": order_id}, {"state_version": 1})
            if current is None or current.get("state_version") != version:
                continue  # another writer moved it (a leader before this one): read again
            self.store.orders.update_one({"_id": order_id}, update)
            self._carry_out(doc, effects)
            return after
        raise ConflictError(f"order {order_id} kept changing under this update: try again")

    def _carry_out(self, doc: Doc, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, WatchThroughLateWindow):
                # The late window replaces the unpaid hold; the grant it buys extends it
                # further (watcher).
                until = as_utc(doc["expires_at"]) + self.late_window
                self.pool.set_watch(str(doc["address"]), until)
            elif isinstance(effect, FreeUnpaidPlace):
                self.slots.give_back(doc.get("slot"), str(doc["_id"]))
            elif isinstance(effect, StatusChanged):
                log.info(
                    "order %s: %s -> %s (%s)", doc["_id"], effect.old, effect.new, effect.event
                )

    def migrate_records(self) -> int:
        """Orders stored before the record existed get it, from their payments (at start)."""
        done = 0
        for doc in self.store.orders.find({"state_version": {"$exists": False}}):
            record = self._legacy_record(doc)
            self.store.orders.update_one(
                {"_id": doc["_id"], "state_version": {"$exists": False}},
                {"$set": {**stored_fields(record), "state_version": 1}},
            )
            done += 1
        return done

    def _legacy_record(self, doc: Doc) -> OrderRecord:
        """The record of an order stored without one: its payments folded in, its window's
        end, and the pending value its address's watch entry shows."""
        record = record_of(doc)
        for payment in self.store.payments.find({"order_id": doc["_id"]}):
            at = as_utc(payment.get("confirmed_at") or doc["created_at"])
            record = apply(
                record, PaymentConfirmed(str(payment["_id"]), int(payment["amount_iota"]), at)
            )[0]
        if doc.get("released_at"):
            record = apply(record, WindowClosed(as_utc(doc["released_at"])))[0]
        entry = self.pool.watch.entry(str(doc["address"])) if doc.get("address") else None
        if entry is not None and entry.get("order_id") == doc["_id"]:
            seen = PendingSeen(
                int(entry.get("pending_iota", 0)),
                int(entry.get("confirmed_seen_iota", 0)),
                utcnow(),
            )
            record = apply(record, seen)[0]
        return current(record, utcnow())

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
        record = self.change(order_id, Cancelled(utcnow()))
        if record is None or record.cancelled_at is None:
            raise ConflictError("a payment to this order arrived: it stays")
        if not self.pool.release(address, order_id):
            # The watcher saw value meanwhile: the payment wins.
            self.change(order_id, CancelWithdrawn(utcnow()))
            raise ConflictError("a payment to this order arrived: it stays")
        self.slots.give_back(doc.get("slot"), order_id)
        log.info("order %s cancelled by its buyer; address %s free again", order_id, address)

    def _out(self, doc: Doc, now: dt.datetime) -> OrderOut:
        record = current(record_of(doc), now)
        return OrderOut(
            order_id=str(doc["_id"]),
            product_id=str(doc["product_id"]),
            hours=float(doc["hours"]),
            amount_iota=int(doc["amount_iota"]),
            address=str(
                doc.get("released_address") or doc.get("address") or doc.get("legacy_address", "")
            ),
            tag=str(doc["tag"]),
            status=record.status,
            expires_at=record.expires_at,
            paid_iota=record.paid_iota,
            confirmed_iota=record.confirmed_iota,
            price_iota_per_hour=int(doc["price_iota_per_hour"]),
            created_at=as_utc(doc["created_at"]),
            provisional_until=_running_until(doc.get("provisional_until"), now),
        )

    def sealed_refused(self, quote_id: str, reason: str) -> None:
        """The quote shows why its payment's sealed message was refused (until one is taken)."""
        self.store.orders.update_one(
            {"_id": quote_id, "username": None}, {"$set": {"sealed_refused": reason}}
        )

    def quote(self, quote_id: str) -> QuoteOut:
        """A quote's status, to anyone with its id (uuid4: 122 random bits)."""
        doc = self.store.orders.find_one({"_id": quote_id})
        if doc is None or doc.get("kind") != "quote":
            raise NotFoundError("no such quote")
        record = current(record_of(doc), utcnow())
        return QuoteOut(
            quote_id=quote_id,
            status=record.status,
            paid_iota=record.paid_iota,
            confirmed_iota=record.confirmed_iota,
            username=doc.get("username"),
            reason=None if doc.get("username") else doc.get("sealed_refused"),
        )

    def find(self, order_id: str) -> Doc | None:
        return self.store.orders.find_one({"_id": order_id})

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


def _running_until(value: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """Provisional access shows until it ends."""
    return as_utc(value) if value is not None and as_utc(value) > now else None


def record_of(doc: Doc) -> OrderRecord:
    """The order's record as stored on its document (defaults for a new order)."""

    def when(name: str) -> dt.datetime | None:
        value = doc.get(name)
        return as_utc(value) if value is not None else None

    return OrderRecord(
        amount_iota=int(doc["amount_iota"]),
        expires_at=as_utc(doc["expires_at"]),
        status=doc.get("status", "pending"),
        confirmed_iota=int(doc.get("confirmed_iota", 0)),
        pending_iota=int(doc.get("pending_iota", 0)),
        seen_iota=int(doc.get("seen_iota", 0)),
        payment_ids=tuple(str(p) for p in doc.get("payment_ids", [])),
        paid_at=when("paid_at"),
        fully_paid_at=when("fully_paid_at"),
        cancelled_at=when("cancelled_at"),
        closed_at=when("closed_at"),
    )


RECORD_DATES = ("paid_at", "fully_paid_at", "cancelled_at", "closed_at")


def stored_fields(record: OrderRecord) -> Doc:
    """The record's fields as the order document keeps them (None: not set)."""
    fields: Doc = {
        "status": record.status,
        "confirmed_iota": record.confirmed_iota,
        "paid_iota": record.paid_iota,
        "pending_iota": record.pending_iota,
        "seen_iota": record.seen_iota,
        "payment_ids": list(record.payment_ids),
    }
    for name in RECORD_DATES:
        value = getattr(record, name)
        if value is not None:
            fields[name] = value
    return fields


def _history(change: StatusChanged) -> Doc:
    return {"from": change.old, "to": change.new, "event": change.event, "at": change.at}
