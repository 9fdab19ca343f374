"""The watch list: the watcher's working set, one entry per deposit address an order holds.

Every write to the `watchlist` collection is here. An entry is made when an order takes an
address (pool.py) and removed when its window closes or the order lets it go, so a poll reads
exactly the watched addresses however large the pool and its history grow. An entry keeps:
`order_id`, `watch_until` (how long value still counts), `order_expires_at`, `base_iota` (what
the address held before this order), `accounted_iota` (how much of its confirmed value was
recorded as payments; payments.py moves it with a compare-and-set), the pending view
(`pending_iota`, `confirmed_seen_iota`) and the bundles named so far.
"""

from __future__ import annotations

import datetime as dt

from pymongo.errors import DuplicateKeyError

from broker_auth.infra.clock import as_utc
from broker_auth.infra.db import Doc, Store


class WatchList:
    def __init__(self, store: Store) -> None:
        self.col = store.watchlist

    def entries(self) -> list[Doc]:
        return list(self.col.find())

    def entry(self, address: str) -> Doc | None:
        return self.col.find_one({"_id": address})

    def holds(self, address: str) -> bool:
        return self.col.find_one({"_id": address}, {"_id": 1}) is not None

    def add(
        self,
        address: str,
        order_id: str,
        watch_until: dt.datetime,
        order_expires_at: dt.datetime,
        accounted_iota: int,
    ) -> None:
        """Watch `address` for the order; an entry made before (a repair) keeps its amounts."""
        entry: Doc = {
            "order_id": order_id,
            "watch_until": watch_until,
            "order_expires_at": order_expires_at,
        }
        fresh: Doc = {
            "accounted_iota": accounted_iota,
            "base_iota": accounted_iota,
            "pending_iota": 0,
            "bundles": [],
        }
        if not self.holds(address):
            entry.update(fresh)
        try:
            self.col.update_one({"_id": address}, {"$set": entry}, upsert=True)
        except DuplicateKeyError:  # the taker and a repairer upserted at once: it exists now
            for name in fresh:
                entry.pop(name, None)
            self.col.update_one({"_id": address}, {"$set": entry})

    def set_until(self, address: str, until: dt.datetime) -> None:
        self.col.update_one({"_id": address}, {"$set": {"watch_until": until}})

    def extend_until(self, address: str, until: dt.datetime) -> None:
        doc = self.col.find_one({"_id": address}, {"watch_until": 1})
        if doc is None:
            return
        if doc.get("watch_until") is None or as_utc(doc["watch_until"]) < until:
            self.set_until(address, until)

    def advance_accounted(self, address: str, start: int, to: int) -> None:
        """Compare-and-set: `accounted_iota` moves from `start` to `to` once."""
        self.col.update_one(
            {"_id": address, "accounted_iota": start}, {"$set": {"accounted_iota": to}}
        )

    def add_bundles(self, address: str, bundles: list[str]) -> None:
        self.col.update_one({"_id": address}, {"$addToSet": {"bundles": {"$each": bundles}}})

    def show_pending(self, address: str, pending_iota: int, confirmed_seen_iota: int) -> None:
        self.col.update_one(
            {"_id": address},
            {"$set": {"pending_iota": pending_iota, "confirmed_seen_iota": confirmed_seen_iota}},
        )

    def remove(self, address: str) -> None:
        self.col.delete_one({"_id": address})

    def remove_if_nothing_arrived(self, entry: Doc) -> bool:
        """Delete the entry only if its amounts are still those of `entry` and nothing was
        seen on the address (a compare-and-set: a payment recorded meanwhile wins)."""
        gone = self.col.delete_one(
            {
                "_id": entry["_id"],
                "order_id": entry.get("order_id"),
                "accounted_iota": int(entry.get("accounted_iota", 0)),
                "pending_iota": int(entry.get("pending_iota", 0)),
                "confirmed_seen_iota": {"$in": [0, None]},
            }
        )
        return bool(gone.deleted_count)
