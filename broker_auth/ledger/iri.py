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


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class _Tx:
    address: str
    value: int
    bundle_hash: str
    current_index: int


@dataclass(frozen=True)
class _Bundle:
    outputs: dict[str, int]  # address -> value of the validated bundle
    tails: tuple[str, ...]  # valid tails seen so far


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
    def bundles_paying(self, addresses: Sequence[str]) -> list[BundleSeen]:
        wanted = set(addresses)
        by_bundle: dict[str, set[str]] = {}
        for tx in self._value_transactions(list(addresses)):
            if tx.value > 0 and tx.address in wanted:
                by_bundle.setdefault(tx.bundle_hash, set()).add(tx.address)
        seen: list[BundleSeen] = []
        for bundle_hash, paid in sorted(by_bundle.items()):
            bundle, confirmed = self._bundle_state(bundle_hash)
            if bundle is None:
                continue  # no valid, signed attachment: forged or incomplete
            for address in sorted(paid):
                value = bundle.outputs.get(address, 0)
                if value > 0:
                    seen.append(BundleSeen(bundle_hash, address, value, confirmed))
        return seen

    def _value_transactions(self, addresses: list[str]) -> list[_Tx]:
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

    def _transactions(self, hashes: list[str]) -> list[_Tx]:
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
        return [self._txs[h] for h in hashes if h in self._txs]

    def _bundle_state(self, bundle_hash: str) -> tuple[_Bundle | None, bool]:
        """The validated bundle (None if no attachment is valid) and whether it is confirmed."""
        if bundle_hash in self._confirmed:
            return self._confirmed[bundle_hash], True
        found = [str(h) for h in self._call("findTransactions", bundles=[bundle_hash])["hashes"]]
        self._transactions(found)
        tails = [h for h in found if h in self._txs and self._txs[h].current_index == 0]
        bundle: _Bundle | None = None
        valid: list[str] = []
        for tail in tails:
            try:
                txs = self.api.get_bundles(TransactionHash(tail.encode()))["bundles"][0]
            except (BadApiResponse, ValueError) as exc:
                log.debug("bundle %s tail %s is not valid: %s", bundle_hash, tail, exc)
                continue
            except OSError as exc:
                raise LedgerUnavailableError(f"getBundles: {exc}") from exc
            if str(txs.hash) != bundle_hash:
                continue
            valid.append(tail)
            if bundle is None:
                outputs: dict[str, int] = {}
                for tx in txs:
                    if tx.value > 0:
                        outputs[str(tx.address)] = outputs.get(str(tx.address), 0) + tx.value
                bundle = _Bundle(outputs, ())
        if bundle is None:
            return None, False
        bundle = _Bundle(bundle.outputs, tuple(valid))
        try:
            states = self.api.get_latest_inclusion([TransactionHash(t.encode()) for t in valid])
        except (BadApiResponse, OSError, ValueError) as exc:
            raise LedgerUnavailableError(f"getInclusionStates: {exc}") from exc
        confirmed = any(bool(s) for s in states["states"].values())
        if confirmed:
            self._confirmed.put(bundle_hash, bundle)
        return bundle, confirmed
