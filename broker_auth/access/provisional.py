"""Provisional access: what instant access (access/instant_access.py) admitted, on the grant.

One document per admitted bundle in `provisional` (`_id`: the bundle hash, so a bundle opens
access once whatever the replica or restart): its order, address, buyer, product, the value at
risk, its inputs, when it was first seen, when access began (`starts_at`) and ends (`until`),
and `state`: `running`, then `converted` (its payment was credited, its paid time counted
from `starts_at`, so it is counted once) or `withdrawn` (a double spend, or it can no longer
confirm). An entry ends by its insert into `provisional_ended` (same `_id`: of a conversion
and a withdrawal racing, one wins; a compare-and-set on `state` would let both win on
FerretDB), then leaves `provisional`: every review reads the running entries whole, and on
FerretDB a read costs every document of its collection, so `provisional` keeps only what
runs. A crash or an error between the two leaves it behind until `finish_moves` (a process's
first poll, and each maintenance pass). A bundle in `provisional_ended` never opens access
again.

The grant keeps `paid_until` (confirmed time) and `provisional_until` (the latest `until` of
its running entries); access ends at the later (`expires_at`), so expiry (access/expiry.py)
ends provisional time like any other and a withdrawal only moves `expires_at` back. Every
grant write holds the leader's grants lock and is made only while this process leads.

A payer whose bundle is withdrawn for a double spend (contested, or its inputs spent by
another bundle) gets no instant access again for BLOCK_S, nor do those inputs: each cycle of
free access would otherwise cost the attacker nothing.
"""

from __future__ import annotations

import contextlib
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

BLOCK_S = 86400.0  # after a double spend: no instant access for the payer and those inputs

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
        self.ended = store.provisional_ended
        self.projector = projector
        self.leader = projector.leader
        self.notify = notify
        self.on_change = on_change

    # -- reading -------------------------------------------------------------------------
    def running(self, now: dt.datetime, **where: str) -> list[Doc]:
        """Entries giving access now (of an order, a buyer, a product, as `where` says)."""
        return [d for d in self.col.find({**where, "state": "running"}) if as_utc(d["until"]) > now]

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
        for col in (self.col, self.ended):
            doc = col.find_one({"_id": bundle_hash}, {"first_seen": 1})
            if doc is not None:
                return as_utc(doc["first_seen"])
        return None

    def _ended_before(self, bundle_hash: str) -> bool:
        return self.ended.find_one({"_id": bundle_hash}, {"_id": 1}) is not None

    def converting(self, order_id: str, payment: Doc) -> list[Doc]:
        """The order's unconverted entries this confirmed payment pays for: those whose bundle
        the payment names, else (no evidence yet) the oldest whose value it covers. A
        stranger's small payment to the order converts nothing of the buyer's bundle."""
        entries = sorted(
            self.col.find({"order_id": order_id, "state": "running"}),
            key=lambda d: as_utc(d["starts_at"]),
        )
        named = {str(b) for b in payment.get("bundles", [])}
        if named:
            return [d for d in entries if str(d["_id"]) in named]
        left, chosen = int(payment.get("amount_iota", 0)), []
        for entry in entries:
            if int(entry["value"]) <= left:
                left -= int(entry["value"])
                chosen.append(entry)
        return chosen

    def until_for_grant(
        self, username: str, product_id: str, now: dt.datetime, excluding: Iterable[str] = ()
    ) -> dt.datetime | None:
        """The latest end of the grant's running provisional access."""
        skip = set(excluding)
        ends = [
            as_utc(d["until"])
            for d in self.running(now, username=username, product_id=product_id)
            if str(d["_id"]) not in skip
        ]
        return max(ends) if ends else None

    def blocked(self, username: str, inputs: Iterable[str], now: dt.datetime) -> bool:
        """Whether the payer or one of the inputs double-spent within BLOCK_S."""
        for key in (f"buyer:{username}", *(f"input:{a}" for a in inputs)):
            doc = self.store.instant_blocks.find_one({"_id": key})
            if doc is not None and as_utc(doc["until"]) > now:
                return True
        return False

    # -- opening -------------------------------------------------------------------------
    def open(self, opening: Opening, username: str) -> bool:
        """Record the admitted bundle and give its buyer access until `until`; False if this
        bundle opened access before, running or ended (a crash between the entry's write and
        the grant's is made right by `repair` at the next process's first poll)."""
        a = opening.admitted
        now = utcnow()
        until = truncate(a.until)
        with self.leader.grants_lock:
            if not self.leader.leads() or self._ended_before(a.bundle_hash):
                return False
            try:
                self.col.insert_one(
                    {
                        "_id": a.bundle_hash,
                        "order_id": a.order_id,
                        "address": opening.address,
                        "username": username,
                        "product_id": opening.product_id,
                        "topic_filter": opening.topic_filter,
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
            if self._ended_before(a.bundle_hash):
                # It ended and moved between the look above and the insert: not again.
                self.col.delete_one({"_id": a.bundle_hash})
                return False
            add_role = self._extend_grant(username, opening.product_id, opening.topic_filter, until)
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
        self, username: str, product_id: str, topic_filter: str, until: dt.datetime
    ) -> bool:
        """Move the grant's provisional end to at least `until` (creating the grant if none);
        idempotent. Whether the buyer's client needs the role."""
        now = utcnow()
        gid = grant_id(username, product_id)
        grant = self.store.grants.find_one({"_id": gid})
        if grant is None:
            self.store.grants.insert_one(
                {
                    "_id": gid,
                    "username": username,
                    "product_id": product_id,
                    "topic_filter": topic_filter,
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
        end = as_utc(grant["expires_at"])
        running = active and end > now
        old = grant.get("provisional_until")
        provisional = max(until, as_utc(old)) if old else until
        # A grant from before instant access has no paid end of its own: its end was paid.
        paid = as_utc(grant.get("paid_until") or end)
        changes: Doc = {
            "provisional_until": provisional,
            "paid_until": min(paid, end) if running else min(paid, now),
            "expires_at": max(provisional, end) if running else provisional,
            "active": True,
            "updated_at": now,
        }
        if not running:
            changes["starts_at"] = now
        self.store.grants.update_one({"_id": gid}, {"$set": changes})
        return not active

    def _add_role(self, username: str, product_id: str) -> None:
        try:
            self.projector.add_grant_role(username, product_id)
        except BrokerError as exc:
            log.warning("provisional grant stored; broker update deferred (%s)", exc)

    def repair(self) -> None:
        """Make every grant agree with the running entries (at a process's first pass: a
        crash may have come between an entry's write and its grant's)."""
        now = utcnow()
        with self.leader.grants_lock:
            self.finish_moves()
            for entry in self.running(now):
                self._extend_grant(
                    str(entry["username"]),
                    str(entry["product_id"]),
                    str(entry.get("topic_filter", "")),
                    as_utc(entry["until"]),
                )
            for grant in self.store.grants.find({"provisional_until": {"$gt": now}}):
                self._shorten_grant(str(grant["username"]), str(grant["product_id"]), now)
        if self.on_change:
            self.on_change()

    # -- ending --------------------------------------------------------------------------
    def finish_moves(self) -> None:
        """Entries that ended and were not taken out of the running ones (a crash or an error
        between the two writes), and ended ones kept here before there was
        `provisional_ended`: at a process's first poll and each maintenance pass."""
        for doc in self.col.find():
            if doc.get("state", "running") != "running":
                with contextlib.suppress(DuplicateKeyError):
                    self.ended.insert_one(doc)
            elif not self._ended_before(str(doc["_id"])):
                continue
            self.col.delete_one({"_id": doc["_id"]})

    def converted(self, entries: Iterable[Doc], order_id: str) -> None:
        """These entries' payment was credited: paid time now."""
        ids = [str(d["_id"]) for d in entries]
        now = utcnow()
        for bundle_hash in ids:
            self._end(bundle_hash, {"state": "converted", "ended_at": now})
        self._show_on_order(order_id, now)

    def _end(self, bundle_hash: str, changes: Doc) -> bool:
        """End a running entry: False if it had ended. The insert into the ended entries
        decides, not a compare-and-set on `state` (FerretDB lets two of those both win)."""
        doc = self.col.find_one({"_id": bundle_hash})
        if doc is None:
            return False
        try:
            self.ended.insert_one({**doc, **changes})
            won = True
        except DuplicateKeyError:
            # The other ending won, or this one before an error cut the move short: then its
            # follow-ups (idempotent) are still to do.
            prior = self.ended.find_one({"_id": bundle_hash}, {"state": 1})
            won = prior is not None and prior.get("state") == changes["state"]
        self.col.delete_one({"_id": bundle_hash})
        return won

    def withdraw(self, entry: Doc, why: str, block: bool = False) -> None:
        """The bundle can no longer confirm (or spends contested inputs): its access ends now;
        paid time and other provisional access stay. `block`: the payer double-spent."""
        now = utcnow()
        username, product_id = str(entry["username"]), str(entry["product_id"])
        with self.leader.grants_lock:
            if not self.leader.leads():
                return
            if block:  # first: the payer double-spent, whichever ending wins
                self._block(username, entry.get("inputs", []), now)
            if not self._end(
                str(entry["_id"]), {"state": "withdrawn", "ended_at": now, "why": why}
            ):
                return
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

    def _block(self, username: str, inputs: Iterable[str], now: dt.datetime) -> None:
        until = now + dt.timedelta(seconds=BLOCK_S)
        for key in (f"buyer:{username}", *(f"input:{a}" for a in inputs)):
            self.store.instant_blocks.update_one(
                {"_id": key}, {"$set": {"until": until}}, upsert=True
            )

    def _shorten_grant(
        self, username: str, product_id: str, now: dt.datetime
    ) -> dt.datetime | None:
        """Bring the grant's provisional end back to its running entries'; never later than it
        was, never in the past (expiry measures its lag from `expires_at`)."""
        gid = grant_id(username, product_id)
        grant = self.store.grants.find_one({"_id": gid})
        if grant is None:
            return None
        provisional = self.until_for_grant(username, product_id, now)
        paid = as_utc(grant.get("paid_until") or grant["expires_at"])
        end = max(paid, provisional) if provisional is not None else paid
        end = max(min(end, as_utc(grant["expires_at"])), truncate(now))
        update: Doc = {"$set": {"expires_at": end, "updated_at": now}}
        if provisional is not None:
            update["$set"]["provisional_until"] = provisional
        else:
            update["$unset"] = {"provisional_until": ""}
        self.store.grants.update_one({"_id": gid}, update)
        return end

    def _show_on_order(self, order_id: str, now: dt.datetime) -> None:
        ends = [as_utc(d["until"]) for d in self.running(now, order_id=order_id)]
        if ends:
            self.store.orders.update_one(
                {"_id": order_id}, {"$set": {"provisional_until": max(ends)}}
            )
        else:
            self.store.orders.update_one({"_id": order_id}, {"$unset": {"provisional_until": ""}})
