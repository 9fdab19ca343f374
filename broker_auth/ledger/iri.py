"""The ledger seam for legacy IOTA: any IRI-API node (Hornet 0.5 included) through pyota.

- Amounts: `getBalances`, the node's confirmed ledger (milestone-confirmed, valid, signed
  bundles only; conflicting bundles never change it).
- Evidence: value transactions on the addresses (`findTransactions` with Hornet's `valueOnly`,
  so zero-value spam costs nothing), grouped by bundle hash; a bundle counts only if one of
  its tails passes pyota's `BundleValidator` (signatures, indexes, zero sum), and is confirmed
  if `getInclusionStates` says so for one of its valid tails (false for conflicting ones).
  Unsigned or incomplete "bundles" have no valid tail and are ignored.
- Spent addresses: `wereAddressesSpentFrom`.
Requests are batched to the node's list limits (Hornet: 1000 per list).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from iota import Address, BadApiResponse, Iota, Transaction, TransactionHash
from iota.adapter import HttpAdapter

from broker_auth.ledger import Balances, BundleSeen, LedgerUnavailableError
from wallet import speedups, ternary

log = logging.getLogger(__name__)

LIST_LIMIT = 1000  # Hornet's httpAPI.limits.requestsList and findTransactions
ZERO_LAST_TRIT = "9ABCDWXYZ"
CACHE_SIZE = 50_000
# Bounds on the pending-bundle work of one call, whatever strangers attach (bundles_paying).
NEW_BUNDLES_PER_CALL = 8  # validated per call (the rest wait for the next)
PER_ADDRESS = 4  # new bundles validated, and pending bundles counted, per address and call
TIP_CHECKS_PER_CALL = 8
TIP_CHECK_INTERVAL_S = 10.0


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class _Tx:
    address: str
    value: int
    bundle_hash: str
    current_index: int


@dataclass
class _Bundle:
    outputs: dict[str, int]  # address -> value of the validated bundle
    inputs: dict[str, int]  # address -> value it spends
    tails: tuple[str, ...]  # valid tails seen so far
    attachments: frozenset[str]  # its value transactions on the watched addresses, when read
    next_tip_check: float = 0.0


def _counted(pending: dict[str, _Bundle], by_bundle: dict[str, set[str]]) -> list[BundleSeen]:
    """Pending value that can still confirm: of bundles sharing an input, at most one will,
    so each address counts the largest of each such group; and PER_ADDRESS bundles at most."""
    parent = {h: h for h in pending}

    def root(h: str) -> str:
        while parent[h] != h:
            parent[h] = parent[parent[h]]
            h = parent[h]
        return h

    spender: dict[str, str] = {}
    for bundle_hash in sorted(pending):
        for address in pending[bundle_hash].inputs:
            other = spender.setdefault(address, bundle_hash)
            parent[root(bundle_hash)] = root(other)
    best: dict[tuple[str, str], tuple[int, str]] = {}  # (address, group) -> (value, bundle)
    for bundle_hash in sorted(pending):
        for address in by_bundle[bundle_hash]:
            value = pending[bundle_hash].outputs.get(address, 0)
            key = (address, root(bundle_hash))
            if value > 0 and value > best.get(key, (0, ""))[0]:
                best[key] = (value, bundle_hash)
    seen: list[BundleSeen] = []
    per_address: dict[str, int] = {}
    for (address, _group), (value, bundle_hash) in sorted(best.items()):
        if per_address.get(address, 0) < PER_ADDRESS:
            per_address[address] = per_address.get(address, 0) + 1
            seen.append(BundleSeen(bundle_hash, address, value, False))
    return seen


class _Lru(OrderedDict[str, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class IriLedger:
    name = "iota-legacy"

    def __init__(self, node_url: str, timeout_s: float = 5.0) -> None:
        speedups.install()  # signature checks run Kerl; same results, several times faster
        self.api = Iota(HttpAdapter(node_url, timeout=timeout_s))
        self._txs = _Lru(CACHE_SIZE)  # tx hash -> _Tx (immutable once stored)
        self._confirmed = _Lru(CACHE_SIZE)  # bundle hash -> _Bundle, confirmed for good
        self._pending = _Lru(CACHE_SIZE)  # bundle hash -> _Bundle, valid, not confirmed yet
        # bundle hash -> (its attachments when it was found unable to confirm, the bundle, or
        # None if invalid); looked at again only if a new attachment shows up.
        self._dropped = _Lru(CACHE_SIZE)

    def _call(self, command: str, **params: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = self.api.adapter.send_request({"command": command, **params})
        except (BadApiResponse, OSError, ValueError) as exc:
            raise LedgerUnavailableError(f"{command}: {exc}") from exc
        return answer

    def ledger_index(self) -> int:
        return int(self._call("getNodeInfo").get("latestSolidSubtangleMilestoneIndex", 0))

    # -- addresses -------------------------------------------------------------------------
    def check_address(self, address: str) -> str | None:
        if not ternary.is_trytes(address) or len(address) not in (81, 90):
            return "not an address: 81 trytes (A-Z and 9), or 90 with checksum"
        if len(address) == 90 and not Address(address.encode()).is_checksum_valid():
            return "invalid checksum"
        if address[80] not in ZERO_LAST_TRIT:
            return "not a Kerl address (last trit not 0): nodes refuse value sent to it"
        return None

    def were_spent(self, addresses: Sequence[str]) -> dict[str, bool]:
        spent: dict[str, bool] = {}
        for chunk in _chunks(list(addresses), LIST_LIMIT):
            states = self._call("wereAddressesSpentFrom", addresses=list(chunk))["states"]
            spent.update(zip(chunk, (bool(s) for s in states), strict=True))
        return spent

    # -- amounts ---------------------------------------------------------------------------
    def confirmed_balances(self, addresses: Sequence[str]) -> Balances:
        values: dict[str, int] = {}
        index: int | None = None
        for chunk in _chunks(list(addresses), LIST_LIMIT):
            answer = self._call("getBalances", addresses=list(chunk))
            values.update(zip(chunk, (int(b) for b in answer["balances"]), strict=True))
            chunk_index = int(answer.get("milestoneIndex", 0))
            index = chunk_index if index is None else min(index, chunk_index)
        return Balances(values, index or 0)

    # -- evidence --------------------------------------------------------------------------
    def bundles_paying(
        self, addresses: Sequence[str], recheck_dropped: bool = False
    ) -> list[BundleSeen]:
        """Confirmed bundles paying the addresses, and the pending ones that can still confirm.

        The work does not grow with what strangers attach: a bundle is fetched and validated
        once (cached by its hash; a new attachment of it is looked at again), at most
        NEW_BUNDLES_PER_CALL new bundles are validated per call and PER_ADDRESS per address
        (the rest wait for the next call), and pending bundles that cannot confirm any more
        drop out for good: invalid ones, those whose inputs' confirmed balances no longer cover
        them (another bundle spent them), and those the node calls conflicting or below max
        depth. Of pending bundles spending a common input at most one can confirm, so each
        address counts the largest of such a group only. `recheck_dropped` (for evidence, once
        per payment) asks again whether a dropped valid bundle confirmed after all (its inputs
        may have been funded by a transfer confirmed in the same milestone).
        """
        wanted = set(addresses)
        by_bundle: dict[str, set[str]] = {}
        attachments: dict[str, set[str]] = {}
        for tx_hash, tx in self._value_transactions(list(addresses)):
            if tx.value > 0 and tx.address in wanted:
                by_bundle.setdefault(tx.bundle_hash, set()).add(tx.address)
                attachments.setdefault(tx.bundle_hash, set()).add(tx_hash)
        seen: list[BundleSeen] = []
        pending: dict[str, _Bundle] = {}
        budget = NEW_BUNDLES_PER_CALL
        per_address: dict[str, int] = {}
        for bundle_hash in sorted(by_bundle):
            known = attachments[bundle_hash]
            if bundle_hash in self._confirmed:
                self._emit(seen, bundle_hash, self._confirmed[bundle_hash], by_bundle, True)
                continue
            dropped: tuple[frozenset[str], _Bundle | None] | None = self._dropped.get(bundle_hash)
            if dropped is not None and known <= dropped[0]:
                if recheck_dropped and dropped[1] is not None:
                    pending[bundle_hash] = dropped[1]  # inclusion only: see _settle
                continue  # cannot confirm, and no new attachment since
            bundle = self._pending.get(bundle_hash)
            if bundle is None or not known <= bundle.attachments:
                paid = by_bundle[bundle_hash]
                if budget <= 0 or any(per_address.get(a, 0) >= PER_ADDRESS for a in paid):
                    continue  # looked at in a later call
                budget -= 1
                for address in paid:
                    per_address[address] = per_address.get(address, 0) + 1
                bundle = self._validate(bundle_hash, known)
                if bundle is None:
                    self._dropped.put(bundle_hash, (frozenset(known), None))
                    continue
                self._pending.put(bundle_hash, bundle)
            pending[bundle_hash] = bundle
        if pending:
            self._settle(pending)
        for bundle_hash in sorted(pending):
            if bundle_hash in self._confirmed:
                self._emit(seen, bundle_hash, self._confirmed[bundle_hash], by_bundle, True)
            if bundle_hash in self._confirmed or bundle_hash in self._dropped:
                del pending[bundle_hash]
        seen.extend(_counted(pending, by_bundle))
        return seen

    @staticmethod
    def _emit(
        seen: list[BundleSeen],
        bundle_hash: str,
        bundle: _Bundle,
        by_bundle: dict[str, set[str]],
        confirmed: bool,
    ) -> None:
        for address in sorted(by_bundle[bundle_hash]):
            value = bundle.outputs.get(address, 0)
            if value > 0:
                seen.append(BundleSeen(bundle_hash, address, value, confirmed))

    def _settle(self, pending: dict[str, _Bundle]) -> None:
        """Confirmed ones move to the confirmed cache; unconfirmable ones are dropped."""
        tails = {t: h for h, b in pending.items() for t in b.tails}
        confirmed: set[str] = set()
        for chunk in _chunks(list(tails), LIST_LIMIT):
            states = self._call("getInclusionStates", transactions=list(chunk))["states"]
            confirmed |= {tails[t] for t, ok in zip(chunk, states, strict=True) if ok}
        for bundle_hash in confirmed:
            self._confirmed.put(bundle_hash, pending[bundle_hash])
            self._pending.pop(bundle_hash, None)
            self._dropped.pop(bundle_hash, None)
        alive = {h: b for h, b in pending.items() if h not in confirmed and h not in self._dropped}
        inputs = sorted({a for b in alive.values() for a in b.inputs})
        if inputs:
            balances = self.confirmed_balances(inputs).values
            for bundle_hash, bundle in alive.items():
                if any(balances.get(a, 0) < v for a, v in bundle.inputs.items()):
                    self._drop(bundle_hash, bundle, "its inputs were spent by another bundle")
        now = time.monotonic()
        due = [(h, b) for h, b in alive.items() if h in self._pending and b.next_tip_check <= now]
        for bundle_hash, bundle in due[:TIP_CHECKS_PER_CALL]:
            bundle.next_tip_check = now + TIP_CHECK_INTERVAL_S
            if all(self._tip_is_dead(tail) for tail in bundle.tails):
                self._drop(bundle_hash, bundle, "conflicting or below max depth")

    def _tip_is_dead(self, tail: str) -> bool:
        try:
            info = self._call("getTipInfo", tailTransaction=tail)
        except LedgerUnavailableError:
            return False  # not solid yet, or unknown: looked at again later
        return bool(info.get("conflicting")) or bool(info.get("shouldReattach"))

    def _drop(self, bundle_hash: str, bundle: _Bundle, why: str) -> None:
        log.debug("bundle %s cannot confirm (%s): dropped from the pending view", bundle_hash, why)
        self._pending.pop(bundle_hash, None)
        self._dropped.put(bundle_hash, (frozenset(bundle.attachments), bundle))

    def _validate(self, bundle_hash: str, attachments: set[str]) -> _Bundle | None:
        """The bundle from its first valid, signed attachment (None if none is valid)."""
        found = [str(h) for h in self._call("findTransactions", bundles=[bundle_hash])["hashes"]]
        txs = dict(self._transactions(found))
        tails = [h for h in found if h in txs and txs[h].current_index == 0]
        bundle: _Bundle | None = None
        valid: list[str] = []
        for tail in tails:
            try:
                bundle_txs = self.api.get_bundles(TransactionHash(tail.encode()))["bundles"][0]
            except (BadApiResponse, ValueError) as exc:
                log.debug("bundle %s tail %s is not valid: %s", bundle_hash, tail, exc)
                continue
            except OSError as exc:
                raise LedgerUnavailableError(f"getBundles: {exc}") from exc
            if str(bundle_txs.hash) != bundle_hash:
                continue
            valid.append(tail)
            if bundle is None:
                outputs: dict[str, int] = {}
                inputs: dict[str, int] = {}
                for tx in bundle_txs:
                    into = outputs if tx.value > 0 else inputs
                    if tx.value:
                        into[str(tx.address)] = into.get(str(tx.address), 0) + abs(tx.value)
                bundle = _Bundle(outputs, inputs, (), frozenset())
        if bundle is None:
            return None
        return _Bundle(bundle.outputs, bundle.inputs, tuple(valid), frozenset(attachments))

    def _value_transactions(self, addresses: list[str]) -> list[tuple[str, _Tx]]:
        hashes: list[str] = []
        pending = [list(c) for c in _chunks(addresses, LIST_LIMIT)]
        while pending:
            chunk = pending.pop()
            found = self._call("findTransactions", addresses=chunk, valueOnly=True)["hashes"]
            if len(found) >= LIST_LIMIT and len(chunk) > 1:  # truncated answer: split
                half = len(chunk) // 2
                pending += [chunk[:half], chunk[half:]]
                continue
            hashes.extend(str(h) for h in found)
        return self._transactions(hashes)

    def _transactions(self, hashes: list[str]) -> list[tuple[str, _Tx]]:
        missing = [h for h in dict.fromkeys(hashes) if h not in self._txs]
        for chunk in _chunks(missing, LIST_LIMIT):
            for tx_hash, trytes in zip(
                chunk, self._call("getTrytes", hashes=list(chunk))["trytes"], strict=True
            ):
                if not str(trytes).strip("9"):
                    continue  # not stored (yet)
                tx = Transaction.from_tryte_string(trytes, hash_=TransactionHash(tx_hash))
                self._txs.put(
                    tx_hash,
                    _Tx(str(tx.address), int(tx.value), str(tx.bundle_hash), tx.current_index),
                )
        return [(h, self._txs[h]) for h in hashes if h in self._txs]
