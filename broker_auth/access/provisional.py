"""Provisional access: what instant access (access/instant_access.py) admitted, on the grant.

One document per admitted bundle in `provisional` (`_id`: the bundle hash, so a bundle opens
access once whatever the replica or restart): its order, buyer, product, the value at risk,
its inputs, when it was first seen, when access began and `until` when it ends, and `state`:
`running`, then `converted` (its payment confirmed: crediting counted the paid time from
`starts_at`) or `withdrawn` (a double spend, or it can no longer confirm).

The grant keeps `paid_until` (confirmed time) and `provisional_until` (the latest `until` of
its running entries); access ends at the later (`expires_at`), so expiry (access/expiry.py)
ends provisional time like any other and a withdrawal only moves `expires_at` back. Every
grant write holds the leader's grants lock, as crediting does.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pymongo.errors import DuplicateKeyError

from broker_auth.access.crediting import grant_id
from broker_auth.access.instant_access import Admitted, Provisional
from broker_auth.broker.errors import BrokerError
from broker_auth.broker.projector import Projector
from broker_auth.infra import metrics
from broker_auth.infra.clock import as_utc, truncate, utcnow
from broker_auth.infra.db import Doc, Store

log = logging.getLogger(__name__)

# (username, event, product_id, expires_at): the buyer's notification.
Notify = Callable[[str, str, str, dt.datetime], None]


@dataclass(frozen=True)
class Opening:
    """An admitted bundle with what the grant needs to know of its order."""

    admitted: Admitted
    address: str  # the order's deposit address the bundle pays
    product_id: str
    topic_filter: str
    inputs: frozenset[str]
    first_seen: dt.datetime


class ProvisionalGrants:
    def __init__(
        self,
        store: Store,
        projector: Projector,
        notify: Notify | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.col = store.provisional
        self.projector = projector
        self.leader = projector.leader
        self.notify = notify
        self.on_change = on_change

    # -- reading -------------------------------------------------------------------------
    def running(self, now: dt.datetime) -> list[Doc]:
        return [d for d in self.col.find({"state": "running"}) if as_utc(d["until"]) > now]

    def as_provisional(self, docs: Iterable[Doc]) -> list[Provisional]:
        return [
            Provisional(
                str(d["_id"]),
                str(d["order_id"]),
                str(d["username"]),
                int(d["value"]),
                frozenset(d.get("inputs", [])),
            )
            for d in docs
        ]

    def first_seen(self, bundle_hash: str) -> dt.datetime | None:
        doc = self.col.find_one({"_id": bundle_hash}, {"first_seen": 1})
        return as_utc(doc["first_seen"]) if doc is not None else None

    def since_for_order(self, order_id: str, now: dt.datetime) -> dt.datetime | None:
        """When the order's running provisional access began (its payment converts it)."""
        starts = [as_utc(d["starts_at"]) for d in self._running_of({"order_id": order_id}, now)]
        return min(starts) if starts else None

    def until_for_grant(
        self, username: str, product_id: str, now: dt.datetime, except_order: str | None = None
    ) -> dt.datetime | None:
        """The latest end of the grant's running provisional access (other orders only)."""
        docs = self._running_of({"username": username, "product_id": product_id}, now)
        ends = [as_utc(d["until"]) for d in docs if d["order_id"] != except_order]
        return max(ends) if ends else None

    def _running_of(self, query: Doc, now: dt.datetime) -> list[Doc]:
        return [d for d in self.col.find({**query, "state": "running"}) if as_utc(d["until"]) > now]

    # -- opening -------------------------------------------------------------------------
    def open(self, opening: Opening, username: str) -> bool:
        """Record the admitted bundle and give its buyer access until `until`; False if this
        bundle opened access before (another pass, replica or process)."""
        a = opening.admitted
        now = utcnow()
        until = truncate(a.until)
        try:
            self.col.insert_one(
                {
                    "_id": a.bundle_hash,
                    "order_id": a.order_id,
                    "address": opening.address,
                    "username": username,
                    "product_id": opening.product_id,
                    "value": a.value,
                    "inputs": sorted(opening.inputs),
                    "first_seen": opening.first_seen,
                    "starts_at": now,
                    "until": until,
                    "state": "running",
                }
            )
        except DuplicateKeyError:
            return False
        with self.leader.grants_lock:
            add_role = self._extend_grant(username, opening, until, now)
            self._show_on_order(a.order_id, now)
            if add_role:
                self._add_role(username, opening.product_id)
        metrics.GRANT_EVENTS.labels("provisional").inc()
        log.info(
            "provisional access for %s to %s until %s (bundle %s, %d iota at risk)",
            username,
            opening.product_id,
            until.isoformat(),
            a.bundle_hash,
            a.value,
        )
        if self.notify:
            self.notify(username, "grant_provisional", opening.product_id, until)
        if self.on_change:
            self.on_change()
        return True

    def _extend_grant(
        self, username: str, opening: Opening, until: dt.datetime, now: dt.datetime
    ) -> bool:
        """Move the grant's provisional end to `until` (creating the grant if none); whether
        the buyer's client needs the role."""
        gid = grant_id(username, opening.product_id)
        grant = self.store.grants.find_one({"_id": gid})
        if grant is None:
            self.store.grants.insert_one(
                {
                    "_id": gid,
                    "username": username,
                    "product_id": opening.product_id,
                    "topic_filter": opening.topic_filter,
                    "starts_at": now,
                    "expires_at": until,
                    "paid_until": now,
                    "provisional_until": until,
                    "active": True,
                    "applied_payments": [],
                    "updated_at": now,
                }
            )
            return True
        active = bool(grant.get("active"))
        running = active and as_utc(grant["expires_at"]) > now
        old_provisional = grant.get("provisional_until")
        provisional = max(until, as_utc(old_provisional)) if old_provisional else until
        changes: Doc = {
            "provisional_until": provisional,
            "expires_at": max(provisional, as_utc(grant["expires_at"])) if running else provisional,
            "active": True,
            "updated_at": now,
        }
        if not running:
            changes["starts_at"] = now
            changes["paid_until"] = min(as_utc(grant.get("paid_until") or now), now)
        self.store.grants.update_one({"_id": gid}, {"$set": changes})
        return not active

    def _add_role(self, username: str, product_id: str) -> None:
        try:
            self.projector.add_grant_role(username, product_id)
        except BrokerError as exc:
            log.warning("provisional grant stored; broker update deferred (%s)", exc)

    # -- ending --------------------------------------------------------------------------
    def converted(self, order_id: str) -> None:
        """The order's payment was credited: its running entries are paid time now."""
        self.col.update_many(
            {"order_id": order_id, "state": "running"},
            {"$set": {"state": "converted", "ended_at": utcnow()}},
        )
        self._show_on_order(order_id, utcnow())

    def withdraw(self, entry: Doc, why: str) -> None:
        """The bundle can no longer confirm (or spends contested inputs): its access ends now;
        paid time and other provisional access stay."""
        now = utcnow()
        done = self.col.update_one(
            {"_id": entry["_id"], "state": "running"},
            {"$set": {"state": "withdrawn", "ended_at": now, "why": why}},
        )
        if not done.modified_count:
            return
        username, product_id = str(entry["username"]), str(entry["product_id"])
        with self.leader.grants_lock:
            end = self._shorten_grant(username, product_id, now)
            self._show_on_order(str(entry["order_id"]), now)
        metrics.GRANT_EVENTS.labels("withdrawn").inc()
        log.warning(
            "provisional access for %s to %s withdrawn (bundle %s: %s)",
            username,
            product_id,
            entry["_id"],
            why,
        )
        if self.notify and end is not None:
            self.notify(username, "grant_withdrawn", product_id, end)
        if self.on_change:
            self.on_change()  # expiry revokes the role at once if nothing else is left

    def _shorten_grant(
        self, username: str, product_id: str, now: dt.datetime
    ) -> dt.datetime | None:
        gid = grant_id(username, product_id)
        grant = self.store.grants.find_one({"_id": gid})
        if grant is None:
            return None
        provisional = self.until_for_grant(username, product_id, now)
        paid = as_utc(grant.get("paid_until") or grant["expires_at"])
        end = max(paid, provisional) if provisional is not None else paid
        # Never later than it was; never in the past either (expiry measures its lag from it).
        end = max(min(end, as_utc(grant["expires_at"])), truncate(now))
        update: Doc = {"$set": {"expires_at": end, "updated_at": now}}
        if provisional is not None:
            update["$set"]["provisional_until"] = provisional
        else:
            update["$unset"] = {"provisional_until": ""}
        self.store.grants.update_one({"_id": gid}, update)
        return end

    def _show_on_order(self, order_id: str, now: dt.datetime) -> None:
        ends = [as_utc(d["until"]) for d in self._running_of({"order_id": order_id}, now)]
        if ends:
            self.store.orders.update_one(
                {"_id": order_id}, {"$set": {"provisional_until": max(ends)}}
            )
        else:
            self.store.orders.update_one({"_id": order_id}, {"$unset": {"provisional_until": ""}})
