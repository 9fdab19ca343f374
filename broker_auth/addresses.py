"""The deposit-address pool: addresses the seller derived offline, one per order, never reused.

States: `free` (loaded, never handed out) -> `assigned` (an order holds it and it is watched)
-> `closed` (its watch window is over; the seller may sweep it) -> `swept`.

Handing out is atomic without transactions: an order is inserted with its address under a
unique index on `orders.address`, so of two processes taking the same free address only one
insert succeeds; the loser tries the next one. The pool document is flipped to `assigned`
after the insert; a crash in between leaves a free document whose address an order holds,
which the next taker finds (its insert fails), repairs and skips.

The watcher's working set is the `watchlist` collection: one document per `assigned` address
(order, window, `accounted_iota`, `pending_iota`, bundles named so far), inserted with the order
and deleted when the address closes, so a poll reads exactly the watched addresses however large
the pool and its history grow. `accounted_iota` is how much of the address's confirmed ledger
value has been recorded as payments (credited or unmatched); payments.py moves it with a
compare-and-set on the watch-list document while the address is watched and on the pool
document otherwise, and the pool document's copy is what the seller's listing shows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from broker_auth import metrics
from broker_auth.clock import as_utc, utcnow
from broker_auth.db import Doc, Store
from broker_auth.errors import ConflictError, NotFoundError, UnavailableError
from broker_auth.ledger import Ledger, LedgerUnavailableError

log = logging.getLogger(__name__)

AddressState = Literal["free", "assigned", "closed", "swept"]
STATES: tuple[AddressState, ...] = ("free", "assigned", "closed", "swept")
MAX_TAKE_ATTEMPTS = 50


class PoolEmptyError(UnavailableError):
    def __init__(self) -> None:
        super().__init__(
            "no free deposit address: the seller must add addresses"
            " (POST /api/deposit-addresses or IOTA_DEPOSIT_ADDRESSES_FILE)"
        )


class AddressTakenError(Exception):
    """Another order holds the address already (the unique index on orders.address refused)."""


@dataclass
class LoadResult:
    added: int = 0
    already_known: int = 0
    refused: list[dict[str, str]] = field(default_factory=list)


def normalize(address: str) -> str:
    return address.strip()[:81]


class DepositAddresses:
    def __init__(self, store: Store, ledger: Ledger, low_water: int) -> None:
        self.store = store
        self.ledger = ledger
        self.low_water = low_water
        self.col = store.deposit_addresses
        self._warned_low = False

    # -- loading ---------------------------------------------------------------------------
    def load(self, addresses: Iterable[str]) -> LoadResult:
        """Add addresses to the pool; invalid, spent and duplicate ones are refused with why."""
        result = LoadResult()
        candidates: dict[str, str] = {}
        for raw in addresses:
            text = raw.strip()
            reason = self.ledger.check_address(text)
            if reason is not None:
                result.refused.append({"address": text[:100], "reason": reason})
                continue
            candidates.setdefault(normalize(text), text)
        known = {
            str(d["_id"]) for d in self.col.find({"_id": {"$in": list(candidates)}}, {"_id": 1})
        }
        fresh = [a for a in candidates if a not in known]
        result.already_known = len(candidates) - len(fresh)
        try:
            spent = self.ledger.were_spent(fresh) if fresh else {}
        except LedgerUnavailableError as exc:
            raise UnavailableError(
                "the IOTA node is unavailable: cannot check the addresses were never spent from"
            ) from exc
        now = utcnow()
        for address in fresh:
            if spent.get(address):
                result.refused.append(
                    {"address": address, "reason": "spent from: unsafe to receive on"}
                )
                continue
            try:
                self.col.insert_one(
                    {
                        "_id": address,
                        "state": "free",
                        "order_id": None,
                        "accounted_iota": 0,
                        "added_at": now,
                    }
                )
                result.added += 1
            except DuplicateKeyError:
                result.already_known += 1
        if result.added:
            log.info("deposit-address pool: %d added", result.added)
            self._warned_low = False
        self.refresh_gauge()
        return result

    # -- handing out -----------------------------------------------------------------------
    def take(
        self,
        insert_order: Callable[[str], None],
        order_id: str,
        watch_until: dt.datetime,
        order_expires_at: dt.datetime,
    ) -> str:
        """Insert the order with a free address (`insert_order(address)`), atomically.

        `insert_order` raises AddressTakenError when another order holds the address.
        """
        skipped: set[str] = set()
        for _attempt in range(MAX_TAKE_ATTEMPTS):
            doc = self.col.find_one(
                {"state": "free", "_id": {"$nin": list(skipped)}}, sort=[("added_at", ASCENDING)]
            )
            if doc is None:
                self.refresh_gauge()
                raise PoolEmptyError()
            address = str(doc["_id"])
            if self._spent_since_loaded(address):
                skipped.add(address)
                continue
            try:
                insert_order(address)
            except AddressTakenError:
                self._repair(address)  # an order holds it already (a race, or a crash)
                skipped.add(address)
                continue
            self._watch(address, order_id, watch_until, order_expires_at, doc)
            self._after_take()
            return address
        raise UnavailableError("deposit addresses are contended; try again")

    def _spent_since_loaded(self, address: str) -> bool:
        """Checked again at hand-out: the seller's seed may have spent it elsewhere meanwhile."""
        try:
            spent = self.ledger.were_spent([address]).get(address, False)
        except LedgerUnavailableError:
            return False  # checked when loaded; the node being down must not stop sales
        if spent:
            log.warning("deposit address %s was spent from: never handed out", address)
            self.col.update_one(
                {"_id": address, "state": "free"},
                {"$set": {"state": "swept", "swept_at": utcnow(), "sweep_bundle": None}},
            )
        return spent

    def _watch(
        self,
        address: str,
        order_id: str,
        watch_until: dt.datetime,
        order_expires_at: dt.datetime,
        pool_doc: Doc,
    ) -> None:
        """Watch-list entry first, then the pool state: a crash between leaves a free pool
        document an order holds, which the next taker repairs (see `take`)."""
        entry: Doc = {
            "order_id": order_id,
            "watch_until": watch_until,
            "order_expires_at": order_expires_at,
        }
        if self.store.watchlist.find_one({"_id": address}, {"_id": 1}) is None:
            entry.update(accounted_iota=int(pool_doc.get("accounted_iota", 0)), pending_iota=0)
            entry["bundles"] = []
        try:
            self.store.watchlist.update_one({"_id": address}, {"$set": entry}, upsert=True)
        except DuplicateKeyError:  # the taker and a repairer upserted at once: it exists now
            entry.pop("accounted_iota", None)
            entry.pop("pending_iota", None)
            entry.pop("bundles", None)
            self.store.watchlist.update_one({"_id": address}, {"$set": entry})
        self.col.update_one(
            {"_id": address},
            {"$set": {"state": "assigned", "order_id": order_id, "assigned_at": utcnow()}},
        )

    def _repair(self, address: str) -> None:
        order = self.store.orders.find_one(
            {"address": address}, {"_id": 1, "watch_until": 1, "expires_at": 1}
        )
        pool_doc = self.col.find_one({"_id": address})
        if order is None or pool_doc is None or pool_doc.get("state") != "free":
            return
        self._watch(
            address,
            str(order["_id"]),
            as_utc(order["watch_until"]),
            as_utc(order["expires_at"]),
            pool_doc,
        )

    def _after_take(self) -> None:
        free = self.refresh_gauge().get("free", 0)
        if free < self.low_water and not self._warned_low:
            log.warning(
                "deposit-address pool low: %d free (DEPOSIT_POOL_LOW_WATER %d); add addresses",
                free,
                self.low_water,
            )
            self._warned_low = True

    # -- watching --------------------------------------------------------------------------
    def watched(self) -> list[Doc]:
        return list(self.store.watchlist.find())

    def extend_watch(self, address: str, until: dt.datetime) -> None:
        doc = self.store.watchlist.find_one({"_id": address}, {"watch_until": 1})
        if doc is None:
            return
        if doc.get("watch_until") is None or as_utc(doc["watch_until"]) < until:
            self.store.watchlist.update_one({"_id": address}, {"$set": {"watch_until": until}})

    def mirror_accounted(self, address: str, value: int) -> None:
        """The seller's listing shows what the watcher accounted (its own copy, by `_id`)."""
        self.col.update_one({"_id": address}, {"$max": {"accounted_iota": value}})

    def close(self, address: str) -> bool:
        """The window is over: the pool document takes the final value; unwatched from now."""
        entry = self.store.watchlist.find_one({"_id": address})
        if entry is None:
            return False
        self.col.update_one(
            {"_id": address},
            {
                "$set": {"state": "closed", "closed_at": utcnow()},
                "$max": {"accounted_iota": int(entry.get("accounted_iota", 0))},
            },
        )
        self.store.watchlist.delete_one({"_id": address})
        return True

    def unheld(self) -> list[Doc]:
        """Addresses no watched order holds (free or closed, not swept): for stray value."""
        return list(self.col.find({"state": {"$in": ["free", "closed"]}}))

    # -- the seller ------------------------------------------------------------------------
    def free_count(self) -> int:
        return int(self.col.count_documents({"state": "free"}))

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for doc in self.col.find({}, {"state": 1}):
            counts[str(doc.get("state"))] = counts.get(str(doc.get("state")), 0) + 1
        return counts

    def refresh_gauge(self) -> dict[str, int]:
        counts = self.counts()
        for state, n in counts.items():
            metrics.DEPOSIT_ADDRESSES.labels(state).set(n)
        return counts

    def page(self, state: AddressState | None, limit: int, offset: int) -> list[Doc]:
        query: Doc = {"state": state} if state else {}
        return list(self.col.find(query).sort("added_at", ASCENDING).skip(offset).limit(limit))

    def mark_swept(self, addresses: Sequence[str], bundle: str) -> None:
        wanted = [normalize(a) for a in addresses]
        docs = {str(d["_id"]): d for d in self.col.find({"_id": {"$in": wanted}})}
        unknown = [a for a in wanted if a not in docs]
        if unknown:
            raise NotFoundError(f"not in the pool: {', '.join(unknown[:5])}")
        held = [a for a in wanted if docs[a]["state"] in ("free", "assigned")]
        if held:
            raise ConflictError(
                f"only closed addresses may be swept; still {docs[held[0]]['state']}:"
                f" {', '.join(held[:5])}"
            )
        now = utcnow()
        for address in wanted:
            self.col.update_one(
                {"_id": address, "state": {"$in": ["closed", "swept"]}},
                {"$set": {"state": "swept", "swept_at": now, "sweep_bundle": bundle}},
            )
        log.info("deposit-address pool: %d swept (bundle %s)", len(wanted), bundle)
        self.refresh_gauge()
