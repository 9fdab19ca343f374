"""The order as the central record: its status and amounts, moved only by `apply`.

What the buyer sees (`GET /api/orders/{id}`) is this record, stored on the order. The watcher
reads the ledger and hands what it found to the order as events; `apply(record, event)` is the
one pure function that turns them into the next record and the effects to carry out (watch the
address through the late window, give the buyer's unpaid place back). Like BTCPay's invoice,
each change of status is kept in the order's history.

Statuses (public, DESIGN.md): `pending` (nothing seen, window open), `unconfirmed` (value seen
on the tangle, none confirmed), `confirmed` (some value confirmed: it never steps back),
`expired` (window passed, nothing seen), and `cancelled` (by its buyer, nothing arrived).
Amounts: `confirmed_iota` is the sum of the confirmed payments recorded for the order, each
counted once by its payment id; `paid_iota` adds what is seen on its way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Literal

OrderStatus = Literal["pending", "unconfirmed", "confirmed", "expired", "cancelled"]


def status_of(paid: int, confirmed: int, expires_at: dt.datetime, now: dt.datetime) -> OrderStatus:
    """The status an order that was not cancelled shows for these amounts at `now`."""
    if confirmed > 0:
        return "confirmed"
    if paid > 0:
        return "unconfirmed"
    return "expired" if now >= expires_at else "pending"


@dataclass(frozen=True)
class OrderRecord:
    amount_iota: int
    expires_at: dt.datetime
    status: OrderStatus = "pending"
    confirmed_iota: int = 0
    # The pending view (watcher): value of valid bundles on their way, and of bundles confirmed
    # by inclusion state whose value the ledger's balance does not show yet (a milestone ahead).
    pending_iota: int = 0
    seen_iota: int = 0
    payment_ids: tuple[str, ...] = ()
    paid_at: dt.datetime | None = None
    fully_paid_at: dt.datetime | None = None
    cancelled_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None

    @property
    def paid_iota(self) -> int:
        # The larger of two views that lag each other by a milestone either way: never a step
        # back, and a bundle both views show is not counted twice.
        return max(self.confirmed_iota, self.seen_iota + self.pending_iota)


@dataclass(frozen=True)
class PaymentConfirmed:
    """A confirmed increase of the order's address was recorded as payment `payment_id`."""

    payment_id: str
    amount_iota: int
    at: dt.datetime


@dataclass(frozen=True)
class PendingSeen:
    """The watcher's current view of bundles paying the address (replaces the previous one)."""

    pending_iota: int
    seen_iota: int
    at: dt.datetime


@dataclass(frozen=True)
class Expired:
    """The clock reached `at` (the payment window ends at the order's `expires_at`)."""

    at: dt.datetime


@dataclass(frozen=True)
class Cancelled:
    at: dt.datetime


@dataclass(frozen=True)
class CancelWithdrawn:
    """The cancel lost a race with a payment arriving: the order stays open."""

    at: dt.datetime


@dataclass(frozen=True)
class WindowClosed:
    """The address is no longer watched: closed for sweeping, or let go (never paid)."""

    at: dt.datetime


OrderEvent = PaymentConfirmed | PendingSeen | Expired | Cancelled | CancelWithdrawn | WindowClosed


@dataclass(frozen=True)
class WatchThroughLateWindow:
    """First confirmed payment: watch the address until `expires_at` + the late window."""


@dataclass(frozen=True)
class FreeUnpaidPlace:
    """Paid in full: the order no longer counts against MAX_UNPAID_ORDERS (a cancelled order
    gives its place back once its address is free again)."""


@dataclass(frozen=True)
class StatusChanged:
    old: OrderStatus
    new: OrderStatus
    event: str
    at: dt.datetime


Effect = WatchThroughLateWindow | FreeUnpaidPlace | StatusChanged


def apply(record: OrderRecord, event: OrderEvent) -> tuple[OrderRecord, list[Effect]]:
    """The next record and what to do about it. Applying an event twice changes nothing."""
    effects: list[Effect] = []
    new = _moved(record, event, effects)
    status = _status(new, event.at)
    if status != new.status:
        effects.append(StatusChanged(new.status, status, type(event).__name__, event.at))
        new = dataclasses.replace(new, status=status)
    return new, effects


def current(record: OrderRecord, now: dt.datetime) -> OrderRecord:
    """The record as the buyer sees it at `now` (the window may have passed since it was
    stored: expiry is a fact of the clock, stored by the watcher's next pass)."""
    return apply(record, Expired(now))[0]


def _moved(record: OrderRecord, event: OrderEvent, effects: list[Effect]) -> OrderRecord:
    if isinstance(event, PaymentConfirmed):
        return _confirmed(record, event, effects)
    if isinstance(event, PendingSeen):
        return dataclasses.replace(
            record, pending_iota=max(0, event.pending_iota), seen_iota=max(0, event.seen_iota)
        )
    if isinstance(event, Cancelled):
        if record.confirmed_iota > 0 or record.cancelled_at is not None:
            return record  # a payment wins; cancelling twice is once
        return dataclasses.replace(record, cancelled_at=event.at)
    if isinstance(event, CancelWithdrawn):
        return dataclasses.replace(record, cancelled_at=None)
    if isinstance(event, WindowClosed):
        if record.closed_at is not None:
            return record
        # Nothing on its way counts once the address is no longer watched.
        return dataclasses.replace(record, closed_at=event.at, pending_iota=0, seen_iota=0)
    return record  # Expired: only the status moves


def _confirmed(record: OrderRecord, event: PaymentConfirmed, effects: list[Effect]) -> OrderRecord:
    if event.payment_id in record.payment_ids or event.amount_iota <= 0:
        return record
    confirmed = record.confirmed_iota + event.amount_iota
    new = dataclasses.replace(
        record,
        confirmed_iota=confirmed,
        payment_ids=(*record.payment_ids, event.payment_id),
        paid_at=record.paid_at or event.at,
    )
    if record.paid_at is None:
        effects.append(WatchThroughLateWindow())
    if confirmed >= record.amount_iota and record.fully_paid_at is None:
        new = dataclasses.replace(new, fully_paid_at=event.at)
        effects.append(FreeUnpaidPlace())
    return new


def _status(record: OrderRecord, now: dt.datetime) -> OrderStatus:
    if record.confirmed_iota > 0:
        return "confirmed"
    if record.cancelled_at is not None:
        return "cancelled"
    if record.closed_at is not None:
        return "expired"
    # The clock only moves forward: an order stored as expired stays expired.
    latest = now if record.status != "expired" else max(now, record.expires_at)
    return status_of(record.paid_iota, 0, record.expires_at, latest)
