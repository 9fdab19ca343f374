"""Sliding-window limits shared by every broker_auth replica: failed logins per username and per
client address, and sign-ups per address, kept in MongoDB (`throttles`).

One document per (limit, key), found by `_id` only (FerretDB scans whole collections for
anything else): `{_id: sha256(name + key), events: [epoch seconds], v, expires_at}`. An event is
added with a compare-and-set on `v`, so two replicas adding at once both count. The key is
hashed: the collection holds no username or address in clear. Documents whose window has passed
are deleted by the lease holder's clean-up (`purge_expired`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from broker_auth.db import Doc

MAX_CAS_ATTEMPTS = 20


class SlidingWindow:
    """At most `limit` events per `window_s` seconds per key, across processes."""

    def __init__(self, collection: Collection[Doc], name: str, limit: int, window_s: float) -> None:
        self.collection = collection
        self.name = name
        self.limit = limit
        self.window_s = window_s

    def _id(self, key: str) -> str:
        return hashlib.sha256(f"{self.name}\x00{key}".encode()).hexdigest()

    def _recent(self, doc: Doc | None, now: float) -> list[float]:
        if doc is None:
            return []
        return [float(t) for t in doc.get("events", []) if float(t) > now - self.window_s]

    def retry_after(self, key: str) -> float | None:
        """Seconds to wait if the key is over its limit, else None.

        With MongoDB down this answers None: whatever is being limited (a login, a sign-up)
        needs MongoDB too and fails with 503 anyway, and bad input still gets its 422.
        """
        now = time.time()
        try:
            doc = self.collection.find_one({"_id": self._id(key)})
        except PyMongoError:
            return None
        events = self._recent(doc, now)
        if len(events) < self.limit:
            return None
        return max(0.0, events[-self.limit] + self.window_s - now)

    def add(self, key: str) -> None:
        with contextlib.suppress(PyMongoError):  # see retry_after
            self._add(key)

    def _add(self, key: str) -> None:
        _id = self._id(key)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            now = time.time()
            doc = self.collection.find_one({"_id": _id})
            events = [*self._recent(doc, now), now][-self.limit :]
            fields = {
                "events": events,
                "expires_at": dt.datetime.fromtimestamp(now + self.window_s, dt.UTC),
            }
            if doc is None:
                try:
                    self.collection.insert_one({"_id": _id, "v": 1, **fields})
                    return
                except DuplicateKeyError:
                    continue  # another replica added the first event: read again
            version = int(doc.get("v", 0))
            done = self.collection.update_one(
                {"_id": _id, "v": version}, {"$set": {**fields, "v": version + 1}}
            )
            if done.matched_count:
                return
        # Under that much contention the key is being hammered: it is over its limit anyway.


def purge_expired(collection: Collection[Doc]) -> int:
    """Delete the windows that have passed (the lease holder calls this now and then)."""
    now = dt.datetime.now(dt.UTC)
    return collection.delete_many({"expires_at": {"$lt": now}}).deleted_count
