"""The node's state: transactions, their indexes, bundles, the ledger and the milestones.

Rules (a single-node, coordinator-style tangle):
- A transaction is stored if it is well formed and meets the minimum weight magnitude.
- A bundle instance is a tail plus the chain of trunks with the same bundle hash (as PyOTA's
  `get_bundles` walks it). Once complete it must be valid (bundle hash, signatures, zero sum,
  PyOTA's own BundleValidator), or the request that completed it is refused.
- Every milestone confirms pending instances in arrival order if applying their value moves
  keeps every balance >= 0. One that would overdraw is conflicting and never confirms. A bundle
  hash confirms at most once: another attachment (reattachment) of a confirmed bundle stays
  unconfirmed for ever ("superseded").
- Milestones are hashes the node makes up; a transaction is included relative to a milestone
  if it was confirmed at that milestone's index or earlier.

All state changes go through the journal first (when there is one) and happen under `lock`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from iota import Bundle, Transaction, TransactionHash
from iota.transaction.validator import BundleValidator

from devnet import curl, ternary
from devnet.journal import Journal, Record
from devnet.transaction import (
    BAD_TRYTES,
    ESSENCE,
    InvalidTransactionError,
    Tx,
    bundle_hash,
    parse,
)

log = logging.getLogger(__name__)

PENDING = "pending"
CONFIRMED = "confirmed"
CONFLICTING = "conflicting"
SUPERSEDED = "superseded"
HASH_CACHE_SIZE = 4096


class NodeError(ValueError):
    """A request the node refuses; the API answers 400 with this message."""


@dataclass
class BundleInstance:
    tail: str
    bundle: str
    hashes: list[str]
    changes: dict[str, int]
    arrival: int
    state: str = PENDING
    confirmed_at: int | None = None

    @property
    def value(self) -> int:
        return sum(v for v in self.changes.values() if v > 0)


@dataclass
class Milestone:
    index: int
    hash: str
    timestamp_ms: int


@dataclass
class ConfirmOutcome:
    confirmed: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)


class Tangle:
    def __init__(
        self,
        min_weight_magnitude: int,
        genesis: dict[str, int],
        journal: Journal | None = None,
    ) -> None:
        self.min_weight_magnitude = min_weight_magnitude
        self.lock = threading.RLock()
        self._journal = journal
        self.txs: dict[str, Tx] = {}
        self._by_address: dict[str, list[str]] = {}
        self._by_bundle: dict[str, list[str]] = {}
        self._by_tag: dict[str, list[str]] = {}
        self._by_approvee: dict[str, list[str]] = {}
        self._tips: dict[str, None] = {}  # insertion-ordered set
        self.instances: dict[str, BundleInstance] = {}
        self._pending: list[str] = []  # tails, arrival order
        self._confirmed_bundles: dict[str, str] = {}  # bundle hash -> confirmed tail
        self.balances: dict[str, int] = dict(genesis)
        self._spent: set[str] = set()
        self.milestones: list[Milestone] = []
        self._milestone_index: dict[str, int] = {}
        self._arrival = 0
        self._hash_cache: OrderedDict[str, str] = OrderedDict()
        self._cache_lock = threading.Lock()

    # ---------------------------------------------------------------- hashing and parsing

    def remember_hashes(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Cache hashes computed during attachToTangle so storing them does not hash again."""
        with self._cache_lock:
            for trytes, tx_hash in pairs:
                self._hash_cache[trytes] = tx_hash
            while len(self._hash_cache) > HASH_CACHE_SIZE:
                self._hash_cache.popitem(last=False)

    def _hash_of(self, trytes: str) -> str:
        with self._cache_lock:
            cached = self._hash_cache.get(trytes)
        return cached if cached is not None else curl.hash_trytes(trytes)

    def parse_all(self, trytes_list: list[str]) -> list[Tx]:
        txs = []
        for raw in trytes_list:
            if not ternary.is_trytes(raw, ternary.TRANSACTION_TRYTES):
                raise NodeError(BAD_TRYTES)
            tx_hash = self._hash_of(raw)
            if ternary.trailing_zero_trits(tx_hash) < self.min_weight_magnitude:
                raise NodeError(
                    f"Invalid transaction hash: weight below {self.min_weight_magnitude}"
                    " (attach it with attachToTangle first)"
                )
            try:
                txs.append(parse(raw, tx_hash))
            except InvalidTransactionError as exc:
                raise NodeError(str(exc)) from None
        return txs

    # ---------------------------------------------------------------- storing

    def store(self, trytes_list: list[str]) -> list[str]:
        """storeTransactions/broadcastTransactions: validate, journal, index. Returns new hashes."""
        txs = self.parse_all(trytes_list)
        # Bundles complete within the request are validated before taking the lock (slow part).
        request = {tx.hash: tx for tx in txs}
        prevalidated: set[tuple[str, ...]] = set()
        for tx in request.values():
            if tx.is_tail:
                chain = self._walk(tx, request.get)
                if chain is not None:
                    _validate(chain)
                    prevalidated.add(tuple(t.hash for t in chain))
        with self.lock:
            new = {h: tx for h, tx in request.items() if h not in self.txs}
            if not new:
                return []
            chains = self._complete_chains(new, prevalidated)
            if self._journal is not None:
                self._journal.append({"s": [[tx.hash, tx.trytes] for tx in new.values()]})
            self._commit(list(new.values()), chains)
            return list(new)

    def _lookup_with(self, overlay: dict[str, Tx]) -> Callable[[str], Tx | None]:
        def lookup(tx_hash: str) -> Tx | None:
            return self.txs.get(tx_hash) or overlay.get(tx_hash)

        return lookup

    def _complete_chains(
        self, new: dict[str, Tx], prevalidated: set[tuple[str, ...]] | None
    ) -> list[list[Tx]]:
        """Bundle instances that `new` completes; validated unless `prevalidated` is None."""
        lookup = self._lookup_with(new)
        chains = []
        for bundle in {tx.bundle for tx in new.values()}:
            tails = [h for h in self._by_bundle.get(bundle, []) if self.txs[h].is_tail]
            tails += [h for h, tx in new.items() if tx.bundle == bundle and tx.is_tail]
            for tail in tails:
                if tail in self.instances:
                    continue
                tail_tx = lookup(tail)
                assert tail_tx is not None
                try:
                    chain = self._walk(tail_tx, lookup)
                except NodeError:
                    if prevalidated is None:
                        continue  # replaying: keep what was accepted before
                    raise
                if chain is None or not any(t.hash in new for t in chain):
                    continue
                if prevalidated is not None and tuple(t.hash for t in chain) not in prevalidated:
                    _validate(chain)
                chains.append(chain)
        return chains

    @staticmethod
    def _walk(tail: Tx, lookup: Callable[[str], Tx | None]) -> list[Tx] | None:
        """Tail plus trunks down to the head; None while a member is missing."""
        chain = [tail]
        current = tail
        while current.current_index < current.last_index:
            nxt = lookup(current.trunk)
            if nxt is None:
                return None
            if (
                nxt.bundle != tail.bundle
                or nxt.current_index != current.current_index + 1
                or nxt.last_index != tail.last_index
            ):
                raise NodeError(
                    f"Invalid bundle {tail.bundle}: transaction {current.current_index}"
                    " does not approve the next transaction of its bundle as trunk"
                )
            chain.append(nxt)
            current = nxt
        return chain

    def _commit(self, new: list[Tx], chains: list[list[Tx]]) -> None:
        latest = self.latest_index
        for tx in new:
            self._arrival += 1
            tx.arrival = self._arrival
            tx.arrival_milestone = latest
            self.txs[tx.hash] = tx
            self._by_address.setdefault(tx.address, []).append(tx.hash)
            self._by_bundle.setdefault(tx.bundle, []).append(tx.hash)
            self._by_tag.setdefault(tx.tag, []).append(tx.hash)
            if tx.obsolete_tag != tx.tag:
                self._by_tag.setdefault(tx.obsolete_tag, []).append(tx.hash)
            for approvee in {tx.trunk, tx.branch}:
                self._by_approvee.setdefault(approvee, []).append(tx.hash)
                self._tips.pop(approvee, None)
            if tx.hash not in self._by_approvee:
                self._tips[tx.hash] = None
        for chain in chains:
            changes: dict[str, int] = {}
            for tx in chain:
                if tx.value:
                    changes[tx.address] = changes.get(tx.address, 0) + tx.value
                if tx.value < 0:
                    self._spent.add(tx.address)  # IRI counts valid pending spends too
            self._arrival += 1
            tail = chain[0]
            self.instances[tail.hash] = BundleInstance(
                tail.hash, tail.bundle, [t.hash for t in chain], changes, self._arrival
            )
            self._pending.append(tail.hash)

    # ---------------------------------------------------------------- milestones

    @property
    def latest(self) -> Milestone:
        return self.milestones[-1]

    @property
    def latest_index(self) -> int:
        return self.milestones[-1].index if self.milestones else 0

    def issue_milestone(self) -> tuple[Milestone, ConfirmOutcome]:
        """Make up the next milestone and confirm what the ledger allows, in arrival order."""
        with self.lock:
            milestone = Milestone(self.latest_index + 1, _milestone_hash(), int(time.time() * 1000))
            outcome = self._decide()
            if self._journal is not None:
                self._journal.append(
                    {
                        "m": milestone.index,
                        "h": milestone.hash,
                        "t": milestone.timestamp_ms,
                        "c": outcome.confirmed,
                        "x": outcome.conflicting,
                        "r": outcome.superseded,
                    }
                )
            self._apply(milestone, outcome)
        for tail in outcome.confirmed:
            inst = self.instances[tail]
            log.info(
                "milestone %d confirmed bundle %s (tail %s, %d txs, value %d)",
                milestone.index,
                inst.bundle,
                tail,
                len(inst.hashes),
                inst.value,
            )
        for tail in outcome.conflicting:
            log.warning(
                "milestone %d: bundle %s (tail %s) would overdraw an address: conflicting",
                milestone.index,
                self.instances[tail].bundle,
                tail,
            )
        return milestone, outcome

    def _decide(self) -> ConfirmOutcome:
        outcome = ConfirmOutcome()
        balances: dict[str, int] = {}
        confirmed_bundles: set[str] = set()
        for tail in self._pending:
            inst = self.instances[tail]
            if inst.bundle in self._confirmed_bundles or inst.bundle in confirmed_bundles:
                outcome.superseded.append(tail)
                continue
            after = {
                a: balances.get(a, self.balances.get(a, 0)) + d for a, d in inst.changes.items()
            }
            if any(v < 0 for v in after.values()):
                outcome.conflicting.append(tail)
                continue
            balances.update(after)
            confirmed_bundles.add(inst.bundle)
            outcome.confirmed.append(tail)
        return outcome

    def _apply(self, milestone: Milestone, outcome: ConfirmOutcome) -> None:
        for tail in outcome.confirmed:
            inst = self.instances[tail]
            for address, delta in inst.changes.items():
                self.balances[address] = self.balances.get(address, 0) + delta
            inst.state = CONFIRMED
            inst.confirmed_at = milestone.index
            for h in inst.hashes:
                self.txs[h].confirmed_at = milestone.index
            self._confirmed_bundles[inst.bundle] = tail
        for tail in outcome.conflicting:
            self.instances[tail].state = CONFLICTING
        for tail in outcome.superseded:
            self.instances[tail].state = SUPERSEDED
        decided = set(outcome.confirmed) | set(outcome.conflicting) | set(outcome.superseded)
        self._pending = [t for t in self._pending if t not in decided]
        self.milestones.append(milestone)
        self._milestone_index[milestone.hash] = milestone.index

    # ---------------------------------------------------------------- replay

    def replay(self, records: Iterable[Record]) -> None:
        """Rebuild state from journal records (no validation: they were validated once)."""
        with self.lock:
            for record in records:
                if "s" in record:
                    new = {h: parse(t, h) for h, t in record["s"] if h not in self.txs}
                    self._commit(list(new.values()), self._complete_chains(new, None))
                elif "m" in record:
                    outcome = ConfirmOutcome(
                        [t for t in record["c"] if t in self.instances],
                        [t for t in record["x"] if t in self.instances],
                        [t for t in record["r"] if t in self.instances],
                    )
                    self._apply(Milestone(record["m"], record["h"], record["t"]), outcome)

    # ---------------------------------------------------------------- queries

    def find(
        self,
        addresses: list[str] | None,
        bundles: list[str] | None,
        tags: list[str] | None,
        approvees: list[str] | None,
    ) -> list[str]:
        """IRI findTransactions: union within a criterion, intersection across criteria."""
        with self.lock:
            found: set[str] | None = None
            for index, keys in (
                (self._by_address, addresses),
                (self._by_bundle, bundles),
                (self._by_tag, tags),
                (self._by_approvee, approvees),
            ):
                if keys is None:
                    continue
                hits = {h for k in keys for h in index.get(k, [])}
                found = hits if found is None else found & hits
            return sorted(found or (), key=lambda h: self.txs[h].arrival)

    def trytes(self, hashes: list[str]) -> list[str]:
        with self.lock:
            null = "9" * ternary.TRANSACTION_TRYTES
            return [self.txs[h].trytes if h in self.txs else null for h in hashes]

    def tips(self, limit: int = 100) -> list[str]:
        with self.lock:
            return list(self._tips)[-limit:]

    def random_tip(self) -> str | None:
        with self.lock:
            tips = list(self._tips)[-20:]
            return secrets.choice(tips) if tips else None

    def known(self, tx_hash: str) -> bool:
        with self.lock:
            return tx_hash in self.txs or tx_hash in self._milestone_index

    def reference_index(self, tip: str) -> int:
        """Milestone index a tip vouches for: its own index, confirmation, or arrival."""
        if tip in self._milestone_index:
            return self._milestone_index[tip]
        tx = self.txs[tip]
        return tx.confirmed_at if tx.confirmed_at is not None else tx.arrival_milestone

    def inclusion_states(self, hashes: list[str], tips: list[str]) -> list[bool]:
        with self.lock:
            missing = [t for t in tips if not self.known(t)]
            if missing:
                raise NodeError(f"One of the tips is absent: {missing[0]}")
            limit = max((self.reference_index(t) for t in tips), default=self.latest_index)
            states = []
            for h in hashes:
                tx = self.txs.get(h)
                states.append(
                    tx is not None and tx.confirmed_at is not None and tx.confirmed_at <= limit
                )
            return states

    def confirmed_balances(self, addresses: list[str]) -> list[int]:
        with self.lock:
            return [self.balances.get(a, 0) for a in addresses]

    def spent(self, addresses: list[str]) -> list[bool]:
        with self.lock:
            return [a in self._spent for a in addresses]

    def consistency(self, tails: list[str]) -> tuple[bool, str]:
        """checkConsistency: are these tails valid and spendable together right now?"""
        with self.lock:
            for tail in tails:
                tx = self.txs.get(tail)
                if tx is None:
                    raise NodeError(f"Invalid transaction, missing: {tail}")
                if not tx.is_tail:
                    raise NodeError(f"Invalid tail: {tail} is not a tail transaction")
            balances: dict[str, int] = {}
            for tail in tails:
                inst = self.instances.get(tail)
                if inst is None:
                    return False, f"tail {tail} is not solid: part of its bundle is missing"
                if inst.state in (CONFLICTING, SUPERSEDED):
                    return False, f"tail {tail} is inconsistent ({inst.state})"
                if inst.state == CONFIRMED:
                    continue
                for address, delta in inst.changes.items():
                    balances[address] = balances.get(address, self.balances.get(address, 0))
                    balances[address] += delta
                    if balances[address] < 0:
                        return False, f"tail {tail} would overdraw address {address}"
            return True, ""

    def instance_of(self, tail: str) -> BundleInstance | None:
        with self.lock:
            return self.instances.get(tail)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"transactions": len(self.txs), "tips": len(self._tips)}


def _milestone_hash() -> str:
    # Ends in 9s like a hash that met a (small) weight magnitude.
    return "".join(secrets.choice(ternary.ALPHABET) for _ in range(78)) + "999"


def _validate(chain: list[Tx]) -> None:
    """The bundle hash must match the essence, then PyOTA's BundleValidator must agree."""
    bundle = chain[0].bundle
    if bundle_hash([tx.trytes[ESSENCE] for tx in chain]) != bundle:
        raise NodeError(f"Invalid bundle {bundle}: bundle hash does not match its transactions")
    objects = [
        Transaction.from_tryte_string(tx.trytes, hash_=TransactionHash(tx.hash)) for tx in chain
    ]
    validator = BundleValidator(Bundle(objects))
    if not validator.is_valid():
        raise NodeError(f"Invalid bundle {bundle}: {'; '.join(validator.errors)}")
