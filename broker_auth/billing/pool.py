"""The deposit-address pool: addresses the seller derived offline, one per order, never reused.

States: `free` (never received for an order) -> `assigned` (an order holds it and it is
watched) -> `closed` (its watch window is over; the seller may sweep it) -> `swept`. An order
that is cancelled, or never paid within its hold, lets its address go back to `free`, at the
end of the queue (`queued_at`): it never signed anything, so it is safe to receive on again.

Handing out is atomic without transactions: an order is inserted with its address under a
unique index on `orders.address`, so of two processes taking the same free address only one
insert succeeds; the loser tries the next one. The pool document is flipped to `assigned`
after the insert; a crash in between leaves a free document whose address an order holds,
which the next taker finds (its insert fails), repairs and skips. A process takes from its own
copy of the free queue's head (queue_head.py), each address read again by `_id` first: on
FerretDB, reading the head means reading the whole pool.

Each assigned address has an entry in the watch list (watch_list.py), the watcher's working
set. `accounted_iota` is how much of the address's confirmed ledger value has been recorded as
payments (credited or unmatched); payments.py moves it with a compare-and-set on the watch-list
entry while the address is watched and on the pool document otherwise, and the pool document's
copy is what the seller's listing shows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from broker_auth.billing.pool_counts import COUNTS_MAX_AGE_S, PoolCounts
from broker_auth.billing.queue_head import Candidate, QueueHead
from broker_auth.billing.watch_list import WatchList
from broker_auth.errors import ConflictError, NotFoundError, UnavailableError
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger import Ledger, LedgerUnavailableError

log = logging.getLogger(__name__)

AddressState = Literal["free", "assigned", "closed", "swept"]
STATES: tuple[AddressState, ...] = ("free", "assigned", "closed", "swept")
MAX_TAKE_ATTEMPTS = 50
QUEUE_ORDER = [("queued_at", ASCENDING), ("added_at", ASCENDING)]


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
        self.watch = WatchList(store)
        self._warned_low = False
        self._counts = PoolCounts(self._count_by_state)
        self._head = QueueHead(self._read_head)  # hand-outs read the queue through it

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
                        "queued_at": now,
                    }
                )
                result.added += 1
            except DuplicateKeyError:
                result.already_known += 1
        if result.added:
            log.info("deposit-address pool: %d added", result.added)
            self._warned_low = False
        self.counts()
        return result

    # -- handing out -----------------------------------------------------------------------
    def take(
        self,
        insert_order: Callable[[str, int], None],
        order_id: str,
        watch_until: dt.datetime,
        order_expires_at: dt.datetime,
    ) -> str:
        """Insert the order with a free address (`insert_order(address, accounted_iota)`),
        atomically; the free queue's head first, from this process's copy of it (queue_head.py).

        `insert_order` raises AddressTakenError when another order holds the address.
        """
        skipped: set[str] = set()
        attempts = refills = 0
        while attempts < MAX_TAKE_ATTEMPTS and refills <= MAX_TAKE_ATTEMPTS:
            candidate = self._head.next(skipped)
            if candidate is None:
                if not self._head.refill(skipped):
                    self._counts.none_free()
                    raise PoolEmptyError()
                refills += 1
                continue
            try:
                doc = self.col.find_one({"_id": candidate.address})
                if (
                    doc is None
                    or doc.get("state") != "free"
                    or doc.get("queued_at") != candidate.queued_at
                ):
                    continue  # taken since the head was read (and maybe let go: queued behind)
                attempts += 1
                if self._hand_out(doc, insert_order, order_id, watch_until, order_expires_at):
                    return candidate.address
                skipped.add(candidate.address)
            finally:
                self._head.done(candidate.address)
        raise UnavailableError("deposit addresses are contended; try again")

    def _hand_out(
        self,
        doc: Doc,
        insert_order: Callable[[str, int], None],
        order_id: str,
        watch_until: dt.datetime,
        order_expires_at: dt.datetime,
    ) -> bool:
        """Give the free address to the order; False if it may not have it now."""
        address = str(doc["_id"])
        if self._spent_since_loaded(address) or self._value_unrecorded(doc):
            return False
        try:
            insert_order(address, int(doc.get("accounted_iota", 0)))
        except AddressTakenError:
            self._repair(address)  # an order holds it already (a race, or a crash)
            return False
        self._watch(address, order_id, watch_until, order_expires_at, doc)
        self._after_take()
        return True

    def _read_head(self, leave_out: set[str], limit: int) -> list[Candidate]:
        query: Doc = {"state": "free", "_id": {"$nin": sorted(leave_out)}}
        docs = self.col.find(query, {"queued_at": 1}).sort(QUEUE_ORDER).limit(limit)
        return [Candidate(str(d["_id"]), d.get("queued_at")) for d in docs]

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

    def _value_unrecorded(self, pool_doc: Doc) -> bool:
        """An address an earlier order let go may have received since its last reading (its
        buyer paid late): handed out before the stray scan records that value, it would count
        for the next order. Such an address waits for the scan; with the node down, too."""
        if not pool_doc.get("released_at"):
            return False
        address = str(pool_doc["_id"])
        try:
            balance = self.ledger.confirmed_balances([address]).values.get(address, 0)
        except LedgerUnavailableError:
            return True
        return balance > int(pool_doc.get("accounted_iota", 0))

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
        self.watch.add(
            address,
            order_id,
            watch_until,
            order_expires_at,
            int(pool_doc.get("accounted_iota", 0)),
        )
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
        self._counts.move(free=-1, assigned=+1)
        free = self.counts(COUNTS_MAX_AGE_S).get("free", 0)
        if free < self.low_water and not self._warned_low:
            log.warning(
                "deposit-address pool low: %d free (DEPOSIT_POOL_LOW_WATER %d); add addresses",
                free,
                self.low_water,
            )
            self._warned_low = True

    # -- watching --------------------------------------------------------------------------
    def watched(self) -> list[Doc]:
        return self.watch.entries()

    def extend_watch(self, address: str, until: dt.datetime) -> None:
        self.watch.extend_until(address, until)

    def set_watch(self, address: str, until: dt.datetime) -> None:
        self.watch.set_until(address, until)

    def mirror_accounted(self, address: str, value: int) -> None:
        """The seller's listing shows what the watcher accounted (its own copy, by `_id`)."""
        self.col.update_one({"_id": address}, {"$max": {"accounted_iota": value}})

    def close(self, address: str) -> bool:
        """The window is over: the pool document takes the final value; unwatched from now."""
        entry = self.watch.entry(address)
        if entry is None:
            return False
        self.col.update_one(
            {"_id": address},
            {
                "$set": {"state": "closed", "closed_at": utcnow()},
                "$max": {"accounted_iota": int(entry.get("accounted_iota", 0))},
            },
        )
        self.watch.remove(address)
        return True

    def release(self, address: str, order_id: str) -> bool:
        """The order lets its address go (cancelled, or never paid within its hold): back to
        the end of the free queue. False, and nothing changed, if value arrived meanwhile.

        Steps in this order, each idempotent: the watch-list entry (deleted only if nothing
        arrived: a compare-and-set on its amounts), the order's hold on the address, the pool
        document. A crash between them is finished by `finish_releases`.
        """
        entry = self.watch.entry(address)
        accounted: int | None = None
        if entry is not None and entry.get("order_id") == order_id:
            accounted = int(entry.get("accounted_iota", 0))
            base = int(entry.get("base_iota", 0))
            pending = int(entry.get("pending_iota", 0))
            seen = int(entry.get("confirmed_seen_iota", 0))
            if accounted > base or pending > 0 or seen > 0:
                return False
            if not self.watch.remove_if_nothing_arrived(entry):
                return False
        self._let_go(address, order_id, accounted)
        return True

    def _let_go(self, address: str, order_id: str, accounted: int | None) -> None:
        now = utcnow()
        # The unique index on orders.address makes a hand-out atomic: the order keeps the
        # address under `released_address` and stops holding it.
        self.store.orders.update_one(
            {"_id": order_id, "address": address},
            {
                "$set": {
                    "address": f"{address}~released~{order_id}",
                    "released_address": address,
                    "released_at": now,
                }
            },
        )
        changes: Doc = {
            "$set": {"state": "free", "order_id": None, "queued_at": now, "released_at": now}
        }
        if accounted is not None:
            changes["$max"] = {"accounted_iota": accounted}
        self.col.update_one({"_id": address, "state": "assigned", "order_id": order_id}, changes)
        log.info("deposit address %s free again (order %s let it go)", address, order_id)
        self._counts.move(free=+1, assigned=-1)

    def finish_releases(self) -> int:
        """Assigned addresses without a watch-list entry: a release a crash cut short."""
        done = 0
        for doc in self.col.find({"state": "assigned"}, {"order_id": 1}):
            # Read after the pool document: a hand-out writes the entry before `assigned`.
            if doc.get("order_id") and not self.watch.holds(str(doc["_id"])):
                self._let_go(str(doc["_id"]), str(doc["order_id"]), None)
                done += 1
        return done

    def migrate_queue(self) -> None:
        """Pools of an older version have no `queued_at`: the load time is their place."""
        for doc in self.col.find({"queued_at": {"$exists": False}}, {"added_at": 1}):
            self.col.update_one(
                {"_id": doc["_id"]}, {"$set": {"queued_at": doc.get("added_at") or utcnow()}}
            )

    def unheld(self) -> list[Doc]:
        """Addresses no watched order holds (free or closed, not swept): for stray value."""
        return list(self.col.find({"state": {"$in": ["free", "closed"]}}))

    # -- the seller ------------------------------------------------------------------------
    def free_count(self) -> int:
        return self.counts(COUNTS_MAX_AGE_S).get("free", 0)

    def counts(self, max_age_s: float = 0.0) -> dict[str, int]:
        """Addresses by state, read again unless the last read is under `max_age_s` old."""
        return self._counts.get(max_age_s)

    def _count_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for doc in self.col.find({}, {"state": 1}):
            counts[str(doc.get("state"))] = counts.get(str(doc.get("state")), 0) + 1
        return counts

    def page(self, state: AddressState | None, limit: int, offset: int) -> list[Doc]:
        query: Doc = {"state": state} if state else {}
        # In hand-out order: the free queue's head first.
        return list(self.col.find(query).sort(QUEUE_ORDER).skip(offset).limit(limit))

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
        self.counts()
