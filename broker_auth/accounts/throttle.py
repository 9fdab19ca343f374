"""Sliding-window limits shared by every broker_auth replica, kept in MongoDB (`throttles`):
failed logins per (username, address), per address and per username, sign-ups per address,
order creation.

Count first, then act: `hit(key)` takes a place in the window *before* the guarded work runs (a
password check, a sign-up), atomically across requests and replicas, or refuses with the
seconds to wait. A request that knows afterwards it should not have counted (a login whose
password was right) calls `give_back(key)`. So 30 guesses at once check at most `limit`
passwords, where checking first and counting afterwards let every one of them through.

A window of `limit` events is `limit` slots. A slot holds at most one event of the last
`window_s` seconds; time is cut into epochs of `window_s` (epoch E = floor(t / window_s)), so
an event in the window is in the current epoch or the one before. One document per event,
found by `_id` only (FerretDB scans whole collections for anything else):

    {_id: "<h>:<epoch>:<slot>", t: epoch seconds, expires_at}

where `<h>` = SHA-256 of the limit's name and the key (no username or address in clear). At
time `now` in epoch E, slot i is taken if `<h>:E:i` exists or `<h>:E-1:i` holds a `t` still
inside the window; it is taken by inserting `<h>:E:i`. The unique `_id` makes exactly one of
racing requests win it: FerretDB has no transactions, and its findAndModify, update and
filtered delete are each a query followed by a write by `_id`, so no compare-and-set or
conditional delete would be atomic there. Nothing here is ever updated: an event leaves the
window as time passes and its document is deleted two epochs later by the lease holder's
clean-up (`purge_expired`), when no request reads that `_id` any more; `give_back` deletes the
one document its own request inserted.

The one race left is at an epoch's start: a request that read the clock just before it and
inserts `<h>:E-1:i` just after another one found that slot free and took `<h>:E:i`. Both sides
look again after inserting (the late one at `<h>:E:i`, an early one of epoch E at
`<h>:E-1:i` during its first EPOCH_RECHECK_S), and a request that finds the other gives its
own back. Replicas' clocks are assumed to agree within that much (as the lease assumes).

A request that finds every slot taken also writes `{_id: "<h>:full", until}`, so the next
ones are refused with one read until a slot frees (a hint only: it never admits anyone).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import secrets
import threading
import time
from dataclasses import dataclass, field

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from broker_auth.infra.db import Doc

# How long into an epoch a request that took a slot checks for a late insert of the epoch before.
EPOCH_RECHECK_S = 5.0
# Entries of the in-process memory of admitted events are dropped once out of the window, at
# most every this many admissions.
PRUNE_EVERY = 1024


@dataclass
class _Admitted:
    """This process's memory of one key: its admitted events, newest last (for `give_back`),
    and the slot to try first (the one after the newest: the oldest event's, in ring order)."""

    next_slot: int = 0
    events: list[tuple[int, str, float]] = field(default_factory=list)  # slot, _id, t


class SlidingWindow:
    """At most `limit` events per `window_s` seconds per key, across processes."""

    def __init__(self, collection: Collection[Doc], name: str, limit: int, window_s: float) -> None:
        self.collection = collection
        self.name = name
        self.limit = limit
        self.window_s = window_s
        self._lock = threading.Lock()
        self._admitted: dict[str, _Admitted] = {}
        self._since_prune = 0

    def hit(self, key: str) -> float | None:
        """Count one event for `key`, atomically: None if admitted, else the seconds to wait
        (and nothing was counted).

        With MongoDB down this admits (None): whatever is being limited (a login, a sign-up)
        needs MongoDB too and fails with 503 anyway, and bad input still gets its 422.
        """
        h = self._hash(key)
        try:
            held: list[float] = []  # when the events holding the slots happened
            start = self._first_slot(h)
            for k in range(self.limit):
                if k == 1:  # the likeliest free slot is taken: perhaps every one is
                    wait = self._full_until(h)
                    if wait is not None:
                        return wait
                holder = self._take(h, (start + k) % self.limit)
                if holder is None:
                    return None
                held.append(holder)
            now = time.time()
            wait = max(0.0, min(held) + self.window_s - now)
            if wait > 0:
                self._mark_full(h, now + wait)
            return wait
        except PyMongoError:
            return None

    def give_back(self, key: str) -> None:
        """Uncount the latest event this process admitted for `key` (a login that succeeded)."""
        h = self._hash(key)
        with self._lock:
            memory = self._admitted.get(h)
            if memory is None or not memory.events:
                return
            slot, doc_id, t = memory.events.pop()
            memory.next_slot = slot
        if time.time() - t >= self.window_s:
            return  # it has left the window on its own
        with contextlib.suppress(PyMongoError):  # see hit
            # Only this request ever deletes this document before it expires. By `_id` alone:
            # FerretDB scans the whole collection for any other filter.
            self.collection.delete_one({"_id": doc_id})
            if self.collection.find_one({"_id": f"{h}:full"}) is not None:
                self.collection.delete_one({"_id": f"{h}:full"})

    def retry_after(self, key: str) -> float | None:
        """Seconds to wait if the key is over its limit, else None; counts nothing (read-only).

        With MongoDB down this answers None (see hit)."""
        h = self._hash(key)
        try:
            wait = self._full_until(h)
            if wait is not None:
                return wait
            now = time.time()
            epoch = self._epoch(now)
            held: list[float] = []
            start = self._first_slot(h)
            for k in range(self.limit):
                slot = (start + k) % self.limit
                holder = self._holder(self._find(h, epoch, slot), now)
                if holder is None:
                    holder = self._holder(self._find(h, epoch - 1, slot), now)
                if holder is None:
                    return None
                held.append(holder)
        except PyMongoError:
            return None
        return max(0.0, min(held) + self.window_s - now)

    # -- one slot

    def _take(self, h: str, slot: int) -> float | None:
        """Take `slot` for an event now: None if taken, else when its holder's event happened."""
        now = time.time()
        epoch = self._epoch(now)
        before = self._find(h, epoch - 1, slot)
        holder = self._holder(before, now)
        if holder is not None:
            return holder
        doc_id = self._id(h, epoch, slot)
        expires = dt.datetime.fromtimestamp((epoch + 2) * self.window_s, dt.UTC)
        try:
            self.collection.insert_one({"_id": doc_id, "t": now, "expires_at": expires})
        except DuplicateKeyError:
            current = self.collection.find_one({"_id": doc_id})
            # Given back in between: free again, but a competitor is at it; count it as held.
            return float(current["t"]) if current is not None else now
        late = self._late_neighbour(h, epoch, slot, now, before_was_empty=before is None)
        if late is not None:
            self.collection.delete_one({"_id": doc_id})  # ours: see give_back
            return late
        self._remember(h, slot, doc_id, now)
        return None

    def _late_neighbour(
        self, h: str, epoch: int, slot: int, now: float, before_was_empty: bool
    ) -> float | None:
        """An event of the epoch boundary's other side in the same slot (see the module
        docstring), inserted while this request took the slot; None if there is none."""
        if self._epoch(time.time()) > epoch:  # this request may be the late one
            holder = self._holder(self._find(h, epoch + 1, slot), time.time())
            if holder is not None:
                return holder
        if before_was_empty and now - epoch * self.window_s < min(
            EPOCH_RECHECK_S, self.window_s / 2
        ):
            return self._holder(self._find(h, epoch - 1, slot), now)
        return None

    def _holder(self, doc: Doc | None, now: float) -> float | None:
        if doc is None:
            return None
        t = float(doc["t"])
        return t if t > now - self.window_s else None

    def _find(self, h: str, epoch: int, slot: int) -> Doc | None:
        return self.collection.find_one({"_id": self._id(h, epoch, slot)})

    # -- the "every slot is taken" hint

    def _full_until(self, h: str) -> float | None:
        doc = self.collection.find_one({"_id": f"{h}:full"})
        if doc is None:
            return None
        wait = float(doc["until"]) - time.time()
        return wait if wait > 0 else None

    def _mark_full(self, h: str, until: float) -> None:
        with contextlib.suppress(PyMongoError):  # two at once: either one is right
            self.collection.replace_one(
                {"_id": f"{h}:full"},
                {"until": until, "expires_at": dt.datetime.fromtimestamp(until, dt.UTC)},
                upsert=True,
            )

    # -- keys, epochs, this process's memory

    def _hash(self, key: str) -> str:
        return hashlib.sha256(f"{self.name}\x00{key}".encode()).hexdigest()

    def _epoch(self, t: float) -> int:
        return math.floor(t / self.window_s)

    @staticmethod
    def _id(h: str, epoch: int, slot: int) -> str:
        return f"{h}:{epoch}:{slot}"

    def _first_slot(self, h: str) -> int:
        with self._lock:
            memory = self._admitted.get(h)
            if memory is not None:
                return memory.next_slot % self.limit
        # A key this process has not admitted yet (another replica did, or this one before a
        # restart): its taken slots run from 0 on, and walking them costs a read each. A
        # random start lands on a free one at once unless the window is nearly full.
        return secrets.randbelow(self.limit)

    def _remember(self, h: str, slot: int, doc_id: str, t: float) -> None:
        with self._lock:
            memory = self._admitted.setdefault(h, _Admitted())
            memory.next_slot = (slot + 1) % self.limit
            memory.events.append((slot, doc_id, t))
            self._since_prune += 1
            if self._since_prune >= PRUNE_EVERY:
                self._since_prune = 0
                self._prune(t - self.window_s)

    def _prune(self, older_than: float) -> None:
        for h in list(self._admitted):
            memory = self._admitted[h]
            memory.events = [e for e in memory.events if e[2] > older_than]
            if not memory.events:
                del self._admitted[h]


def purge_expired(collection: Collection[Doc]) -> int:
    """Delete what no request reads any more: events two epochs old, hints past their time
    (the lease holder calls this now and then)."""
    now = dt.datetime.now(dt.UTC)
    return collection.delete_many({"expires_at": {"$lt": now}}).deleted_count
