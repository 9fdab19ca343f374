"""Grants: time-limited access of one buyer to one product, extended by confirmed payments.

Crediting is exactly-once without transactions. The payment's id is pushed onto the grant in
the same atomic update that moves the grant's end (a compare-and-set on the old end and on the
id being absent); only then is the payment flagged `credited`. After a crash between the two
writes, crediting again finds the id on the grant and just sets the flag: never twice, never
lost. What a credit changes is computed as data (crediting.py); `credit` reads the grant,
writes the plan and carries out its effects.

A grant's `active` flag says whether the buyer's client should hold the product role; all role
changes happen under the leader's grants lock, so reconciliation never sees half a change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from broker_auth.access.crediting import (
    CreditPlan,
    Purchase,
    credited_fields,
    plan_credit,
    purchase_of,
)
from broker_auth.access.crediting import grant_id as grant_id  # where callers look for it
from broker_auth.access.provisional import ProvisionalGrants
from broker_auth.broker.errors import BrokerError
from broker_auth.broker.projector import Projector
from broker_auth.infra import metrics
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.infra.events import EventWriter
from broker_auth.schemas import GrantAdminOut, GrantOut

log = logging.getLogger(__name__)

MAX_CAS_ATTEMPTS = 20
# (username, event, product_id, expires_at): the buyer's notification of a grant change.
Notify = Callable[[str, str, str, dt.datetime], None]


class Grants:
    def __init__(
        self,
        store: Store,
        projector: Projector,
        events: EventWriter | None = None,
        on_change: Callable[[], None] | None = None,
        notify: Notify | None = None,
        provisional: ProvisionalGrants | None = None,
    ) -> None:
        self.store = store
        self.provisional = provisional
        self.projector = projector
        self.leader = projector.leader  # grant changes are the leader's, under its lock
        self.events = events
        self.on_change = on_change
        self.notify = notify

    # -- crediting -----------------------------------------------------------------------
    def ends_at(self, username: str, product_id: str) -> dt.datetime | None:
        """When the buyer's grant of the product ends (None: never granted)."""
        grant = self.store.grants.find_one(
            {"_id": grant_id(username, product_id)}, {"expires_at": 1}
        )
        return as_utc(grant["expires_at"]) if grant is not None else None

    def credit(self, payment: Doc, confirmed_seen_at: float | None = None) -> None:
        """Turn a confirmed, matched payment into access time (idempotent)."""
        pid = str(payment["_id"])
        if not self.leader.leads():
            # Lost the lease mid-pass: the new leader credits what is left uncredited.
            log.warning("payment %s left to the leader", pid)
            return
        order = self.store.orders.find_one({"_id": payment["order_id"]})
        if order is None:
            log.error("payment %s refers to missing order %s", pid, payment["order_id"])
            return
        purchase = purchase_of(payment, order)
        if purchase.seconds <= 0:  # nothing bought (off sale beyond the ordered amount)
            self.store.payments.update_one(
                {"_id": pid}, {"$set": {"credited": True, "credited_at": utcnow()}}
            )
            log.info("payment %s buys no time (refund due: %d iota)", pid, purchase.amount_iota)
            return
        with self.leader.grants_lock:
            if not self.leader.leads():  # lost while waiting for the lock (a long reconcile)
                log.warning("payment %s left to the leader", pid)
                return
            provisional_until, converting = None, []
            if self.provisional is not None:
                # The provisional access this payment pays for becomes paid time from when it
                # began; other provisional access keeps running on the grant.
                now = utcnow()
                converting = self.provisional.converting(str(order["_id"]), payment)
                since = min((as_utc(e["starts_at"]) for e in converting), default=None)
                purchase = dataclasses.replace(purchase, provisional_since=since)
                provisional_until = self.provisional.until_for_grant(
                    purchase.username,
                    purchase.product_id,
                    now,
                    excluding=(str(e["_id"]) for e in converting),
                )
            plan = self._write_grant(purchase, provisional_until)
            # Flagged only after the grant holds the payment's id: a crash in between is
            # repaired by crediting again (the plan then finds the id and writes nothing).
            self.store.payments.update_one(
                {"_id": pid}, {"$set": credited_fields(purchase, utcnow())}
            )
            if self.provisional is not None:
                self.provisional.converted(converting, str(order["_id"]))
            if plan.add_role:
                self._add_role(purchase)
        if not plan.applied_before:
            self._announce(plan, purchase, confirmed_seen_at)

    def _write_grant(self, purchase: Purchase, provisional_until: dt.datetime | None) -> CreditPlan:
        """Plan against the grant as read and write it, again while it changes meanwhile."""
        for _attempt in range(MAX_CAS_ATTEMPTS):
            grant = self.store.grants.find_one({"_id": purchase.grant_id})
            plan = plan_credit(purchase, grant, utcnow(), provisional_until)
            if self._stored(plan):
                return plan
        raise RuntimeError(f"grant {purchase.grant_id}: too much contention")

    def _stored(self, plan: CreditPlan) -> bool:
        """Write the plan's grant change; False if the grant changed since it was read."""
        if plan.insert is not None:
            try:
                self.store.grants.insert_one(plan.insert)
            except DuplicateKeyError:
                return False
            return True
        if plan.match is None or plan.update is None:
            return True  # applied before a crash: only the payment's flag is missing
        updated = self.store.grants.find_one_and_update(
            plan.match, plan.update, return_document=ReturnDocument.AFTER
        )
        return updated is not None

    def _add_role(self, purchase: Purchase) -> None:
        try:
            self.projector.add_grant_role(purchase.username, purchase.product_id)
        except BrokerError as exc:
            log.warning("grant %s stored; broker update deferred (%s)", purchase.grant_id, exc)

    def _announce(
        self, plan: CreditPlan, purchase: Purchase, confirmed_seen_at: float | None
    ) -> None:
        """The credit's effects beyond the store: metrics, log, grant event, notice, wake-up."""
        event = str(plan.event)
        metrics.CREDITS.inc()
        metrics.GRANT_EVENTS.labels(event).inc()
        if confirmed_seen_at is not None:
            metrics.GRANT_APPLY_SECONDS.observe(time.monotonic() - confirmed_seen_at)
        log.info(
            "grant %s %s by %.1f s (payment %s, %d iota)",
            plan.grant_id,
            event,
            purchase.seconds,
            purchase.payment_id,
            purchase.amount_iota,
        )
        if self.events:
            self.events.grant(purchase.product_id, event, purchase.seconds)
        if self.notify and plan.notice is not None:
            n = plan.notice
            self.notify(n.username, n.event, n.product_id, n.expires_at)
        if self.on_change:
            self.on_change()

    # -- expiry ------------------------------------------------------------------------
    def expiry_pass(self, notice_s: float) -> dt.datetime | None:
        """The expiry loop's pass, on one read of the active grants (it runs at least once a
        second: four queries a pass were a share of a saturated store): revoke the ended ones,
        send the due `grant_ending` notices; returns when the next end or notice falls due."""
        notice = notice_s if self.notify is not None else None
        near = self._active_ending_by(utcnow() + dt.timedelta(seconds=notice or 0.0))
        now = utcnow()
        self.expire_due([g for g in near if as_utc(g["expires_at"]) <= now])
        # The ended ones are revoked now (one a credit extended meanwhile wakes the loop).
        # A revocation waits for the broker: what is still ahead is seen from after it.
        now = utcnow()
        ahead = [g for g in near if as_utc(g["expires_at"]) > now]
        if notice is not None:
            self._notify_ending(ending_within(ahead, now, notice))
        if near and as_utc(near[-1]["expires_at"]) <= now:
            return now  # the read stopped at a grant that has ended since: more may have
        return next_end_or_notice(ahead, now, notice)

    def _active_ending_by(self, horizon: dt.datetime) -> list[Doc]:
        """The active grants ending by `horizon`, and the first one after it (its end, or its
        notice, is the next thing due), soonest first: with many subscribers the read stops
        there instead of reading them all every second."""
        found: list[Doc] = []
        cursor = (
            self.store.grants.find({"active": True}, ACTIVE_FIELDS)
            .sort("expires_at", 1)
            .batch_size(NEAR_BATCH)
        )
        with cursor:
            for g in cursor:
                found.append(g)
                if as_utc(g["expires_at"]) > horizon:
                    break
        return found

    def expire_due(self, ended: list[Doc] | None = None) -> int:
        """Revoke every grant whose end has passed (`ended`: as just read); returns how many."""
        revoked = 0
        with self.leader.grants_lock:
            now = utcnow()
            if ended is None:
                ended = list(self.store.grants.find({"active": True, "expires_at": {"$lte": now}}))
            for g in ended:
                if not self.leader.leads():
                    break  # lost the lease mid-pass: the new holder revokes the rest
                # A compare-and-set on the end read: a credit that extended it meanwhile wins.
                claimed = self.store.grants.find_one_and_update(
                    {"_id": g["_id"], "active": True, "expires_at": g["expires_at"]},
                    {"$set": {"active": False, "revoked_at": now, "updated_at": now}},
                )
                if claimed is None:
                    continue
                try:
                    self.projector.remove_grant_role(str(g["username"]), str(g["product_id"]))
                except BrokerError as exc:
                    log.warning("grant %s ended; broker update deferred (%s)", g["_id"], exc)
                    # Retried from the expiry loop with backoff until the broker takes it.
                    self.projector.request_grant_sync(str(g["username"]), failed_attempts=1)
                end = as_utc(g["expires_at"])
                lag = (utcnow() - end).total_seconds()
                metrics.REVOKE_LAG_SECONDS.observe(max(0.0, lag))
                metrics.GRANT_EVENTS.labels("revoked").inc()
                length = (end - as_utc(g["starts_at"])).total_seconds()
                log.info("grant %s revoked %.3f s after its end", g["_id"], lag)
                if self.events:
                    self.events.grant(str(g["product_id"]), "revoked", length)
                if self.notify:
                    self.notify(str(g["username"]), "grant_ended", str(g["product_id"]), end)
                revoked += 1
        return revoked

    def _notify_ending(self, ending: list[Doc]) -> int:
        """`grant_ending` for each of `ending` not told yet, once per end (a grant extended
        afterwards gets a new notice before its new end)."""
        assert self.notify is not None
        sent = 0
        for g in ending:
            end = g["expires_at"]
            # Under the lock like every grant write: FerretDB's findAndModify is not atomic, so
            # this one racing a credit's extension wrote the grant back without it (found by
            # the FerretDB-SIGKILL fault test: a payment credited, its 60 s missing).
            with self.leader.grants_lock:
                if not self.leader.leads():
                    break  # a former leader's write could undo the new leader's credit
                claimed = self.store.grants.find_one_and_update(
                    {"_id": g["_id"], "expires_at": end, "ending_notice_for": {"$ne": end}},
                    {"$set": {"ending_notice_for": end}},
                )
            if claimed is not None:
                self.notify(str(g["username"]), "grant_ending", str(g["product_id"]), as_utc(end))
                sent += 1
        return sent

    def active_for(self, username: str) -> list[GrantOut]:
        return [
            GrantOut(**g.model_dump(exclude={"username", "provisional_iota"}))
            for g in self._active(username)
        ]

    def active_all(self) -> list[GrantAdminOut]:
        """Every buyer's active grants (the seller)."""
        return self._active(None)

    def _active(self, username: str | None) -> list[GrantAdminOut]:
        query: dict[str, object] = {"active": True, "expires_at": {"$gt": utcnow()}}
        if username is not None:
            query["username"] = username
        now = utcnow()
        docs = list(self.store.grants.find(query).sort([("username", 1), ("product_id", 1)]))
        at_risk: Counter[str] = Counter()  # grant id -> unconfirmed value giving access now
        ends: dict[str, dt.datetime] = {}
        paid_until: dict[str, dt.datetime] = {}
        for d in docs:
            paid_until[str(d["_id"])] = as_utc(d.get("paid_until") or d["expires_at"])
        for entry in self.provisional.running(now) if self.provisional else []:
            gid = grant_id(str(entry["username"]), str(entry["product_id"]))
            until = as_utc(entry["until"])
            if gid not in paid_until or until <= paid_until[gid]:
                continue  # paid time covers it: nothing rests on it
            at_risk[gid] += int(entry["value"])
            ends[gid] = max(until, ends.get(gid, until))
        return [
            GrantAdminOut(
                username=str(d["username"]),
                product_id=str(d["product_id"]),
                topic_filter=str(d["topic_filter"]),
                expires_at=as_utc(d["expires_at"]),
                provisional_until=ends.get(str(d["_id"])),
                provisional_iota=at_risk[str(d["_id"])],
            )
            for d in docs
        ]

    def active_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for d in self.store.grants.find({"active": True}, {"product_id": 1}):
            counts[str(d["product_id"])] += 1
        for p in self.store.products.find({}, {"_id": 1}):
            counts.setdefault(str(p["_id"]), 0)
        return dict(counts)


# The expiry pass reads the active grants soonest end first, this many a round trip.
NEAR_BATCH = 64
# What the expiry pass reads of each active grant.
ACTIVE_FIELDS = {
    "expires_at": 1,
    "starts_at": 1,
    "username": 1,
    "product_id": 1,
    "ending_notice_for": 1,
}


def ending_within(active: list[Doc], now: dt.datetime, notice_s: float) -> list[Doc]:
    """The active grants ending after `now` but within `notice_s`, not yet told of this end."""
    soon = now + dt.timedelta(seconds=notice_s)
    return [
        g
        for g in active
        if now < as_utc(g["expires_at"]) <= soon and g.get("ending_notice_for") != g["expires_at"]
    ]


def next_end_or_notice(
    active: list[Doc], now: dt.datetime, notice_s: float | None
) -> dt.datetime | None:
    """When the expiry pass is due next: the earliest end, or the earliest notice still ahead
    (an end beyond `notice_s` from `now`; None: notices are off)."""
    due: list[dt.datetime] = []
    for g in active:
        end = as_utc(g["expires_at"])
        due.append(end)
        if notice_s is not None and end - dt.timedelta(seconds=notice_s) > now:
            due.append(end - dt.timedelta(seconds=notice_s))
    return min(due, default=None)
