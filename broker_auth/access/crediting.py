"""What crediting one confirmed payment does, as data: the grant's new end and every effect.

`plan_credit` is pure (the grant as read, the payment's purchase, the time in; a `CreditPlan`
out); `Grants.credit` (grants.py) writes the plan with a compare-and-set and carries out its
effects. Time stacks onto the end of a running grant; an ended or revoked grant starts again
now. A payment whose id the grant already holds is never counted again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from broker_auth.infra.clock import as_utc, truncate
from broker_auth.infra.db import Doc

# The buyer's notification of each grant event a credit causes.
NOTICE_EVENTS = {"granted": "grant_started", "extended": "grant_extended"}


def grant_id(username: str, product_id: str) -> str:
    return f"{username}/{product_id}"


@dataclass(frozen=True)
class Purchase:
    """One confirmed payment as crediting sees it: whose grant it extends and by how much."""

    payment_id: str
    username: str
    product_id: str
    topic_filter: str
    amount_iota: int
    seconds: float
    # When the provisional access this payment converts began (instant access): the paid time
    # is counted from then, so the buyer gets it once, not twice (and two orders' provisional
    # access running side by side costs him nothing).
    provisional_since: dt.datetime | None = None

    @property
    def grant_id(self) -> str:
        return grant_id(self.username, self.product_id)


def purchase_of(payment: Doc, order: Doc) -> Purchase:
    """The payment's purchase: its seconds were priced when it was confirmed (`grant_seconds`,
    Payments.priced); a record of an older version is priced at the order's price."""
    amount = int(payment.get("amount_iota", 0))
    priced = payment.get("grant_seconds")
    seconds = (
        float(priced) if priced is not None else amount * 3600 / int(order["price_iota_per_hour"])
    )
    return Purchase(
        payment_id=str(payment["_id"]),
        username=str(order["username"]),
        product_id=str(order["product_id"]),
        topic_filter=str(order["topic_filter"]),
        amount_iota=amount,
        seconds=seconds,
    )


@dataclass(frozen=True)
class Notice:
    """A notification to the buyer (access/notices.py sends it)."""

    username: str
    event: str
    product_id: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class CreditPlan:
    """One attempt to credit a purchase onto the grant as read.

    Exactly one grant write: `insert` (no grant yet), or `update` guarded by `match` (the grant
    unchanged since it was read, the payment not on it yet), or none when the payment was
    applied before (a crash between the grant write and the payment's `credited` flag).
    """

    grant_id: str
    event: str | None  # the grant event to write: "granted", "extended"; None: applied before
    new_end: dt.datetime | None
    insert: Doc | None = None
    match: Doc | None = None
    update: Doc | None = None
    add_role: bool = False  # the broker change: give the buyer's client the product role
    notice: Notice | None = None

    @property
    def applied_before(self) -> bool:
        return self.event is None


def plan_credit(
    purchase: Purchase,
    grant: Doc | None,
    now: dt.datetime,
    provisional_until: dt.datetime | None = None,
) -> CreditPlan:
    """How `purchase` changes `grant` (None: there is none yet) at `now`.

    A grant keeps its paid end (`paid_until`; `expires_at` on grants older than instant
    access) and the end of provisional access still running for other orders
    (`provisional_until`, passed in); access ends at the later of the two (`expires_at`).
    Paid time the payment converts from provisional access counts from when that began
    (`provisional_since`); an end that falls before now is now (the grant ends at once).
    """
    gid, pid = purchase.grant_id, purchase.payment_id
    length = dt.timedelta(seconds=purchase.seconds)
    floor = min(purchase.provisional_since or now, now)
    if grant is None:
        return _plan_new_grant(purchase, now, truncate(floor + length), provisional_until)
    if pid in grant.get("applied_payments", []):
        return CreditPlan(gid, event=None, new_end=None)
    active = bool(grant.get("active"))
    running = active and as_utc(grant["expires_at"]) > now
    paid_end = as_utc(grant.get("paid_until") or grant["expires_at"])
    # Stack onto the paid end of a live grant; otherwise start now (or when the provisional
    # access it converts began).
    paid = truncate((max(paid_end, floor) if active else floor) + length)
    end = _later(paid, provisional_until, now)
    changes: Doc = {"expires_at": end, "paid_until": paid, "active": True, "updated_at": now}
    if not running:
        changes["starts_at"] = now
    update: Doc = {"$set": changes, "$push": {"applied_payments": pid}}
    if provisional_until is not None:
        changes["provisional_until"] = provisional_until
    elif "provisional_until" in grant:
        update["$unset"] = {"provisional_until": ""}
    return _planned(
        purchase,
        "extended" if running else "granted",
        end,
        # An ended grant not yet revoked still holds its role.
        add_role=not active,
        match={
            "_id": gid,
            "expires_at": grant["expires_at"],
            "active": grant.get("active"),
            "applied_payments": {"$ne": pid},
        },
        update=update,
    )


def _plan_new_grant(
    purchase: Purchase, now: dt.datetime, paid: dt.datetime, provisional_until: dt.datetime | None
) -> CreditPlan:
    """The first payment for a (buyer, product): a grant document to insert."""
    end = _later(paid, provisional_until, now)
    doc: Doc = {
        "_id": purchase.grant_id,
        "username": purchase.username,
        "product_id": purchase.product_id,
        "topic_filter": purchase.topic_filter,
        "starts_at": now,
        "expires_at": end,
        "paid_until": paid,
        "active": True,
        "applied_payments": [purchase.payment_id],
        "updated_at": now,
    }
    if provisional_until is not None:
        doc["provisional_until"] = provisional_until
    return _planned(purchase, "granted", end, add_role=True, insert=doc)


def _later(
    paid: dt.datetime, provisional_until: dt.datetime | None, now: dt.datetime
) -> dt.datetime:
    """Access ends at the later of paid and provisional time, and not before now."""
    ends = [paid, truncate(now)] + ([provisional_until] if provisional_until is not None else [])
    return max(ends)


def _planned(
    purchase: Purchase,
    event: str,
    end: dt.datetime,
    add_role: bool,
    insert: Doc | None = None,
    match: Doc | None = None,
    update: Doc | None = None,
) -> CreditPlan:
    notice = Notice(purchase.username, NOTICE_EVENTS[event], purchase.product_id, end)
    return CreditPlan(
        purchase.grant_id, event, end, insert, match, update, add_role=add_role, notice=notice
    )


def credited_fields(purchase: Purchase, now: dt.datetime) -> Doc:
    """What the payment record keeps once credited: the flag, when, onto which grant, how long."""
    return {
        "credited": True,
        "credited_at": now,
        "grant_id": purchase.grant_id,
        "grant_seconds": purchase.seconds,
    }
