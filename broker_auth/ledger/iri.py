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
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from iota import Address, BadApiResponse, Iota, Transaction, TransactionHash
from iota.adapter import HttpAdapter

from broker_auth.ledger import Balances, BundleSeen, LedgerUnavailableError, speedups, ternary

log = logging.getLogger(__name__)

LIST_LIMIT = 1000  # Hornet's httpAPI.limits.requestsList and findTransactions
CACHE_SIZE = 50_000
# Bounds on the pending-bundle work of one call, whatever strangers attach (bundles_paying).
TAILS_PER_CALL = 8  # attachments validated per call, addresses served in turn
MAX_TAILS = 8  # attachments of one bundle ever validated (reattachments beyond: ignored)
# A failed attachment is tried again after these pauses, then it is invalid. The first is
# short: a bundle still arriving (the node stores it transaction by transaction) is complete
# within milliseconds, and waiting a whole second let a 1 s milestone confirm it unseen.
# So an invalid attachment costs 4 validations over 3.2 s (each within TAILS_PER_CALL and
# MAX_TAILS: a stranger's spam stays bounded per call).
VALIDATE_RETRY_S = (0.2, 1.0, 2.0)
PER_ADDRESS = 4  # pending bundles counted per address
TIP_CHECKS_PER_CALL = 8
TIP_CHECK_INTERVAL_S = 10.0
TIP_RECHECK_S = 0.3  # a tail the node could not tell about yet (not solid)


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
    ready: bool = False  # the last getTipInfo: solid, not conflicting, not below max depth
    unknown_checks: int = 0  # getTipInfo answers "not solid" in a row (backs off)


@dataclass(frozen=True)
class _Dropped:
    """A bundle out of the pending view: why, and the attachments known then."""

    attachments: frozenset[str]
    bundle: _Bundle | None  # None if no attachment was valid
    why: str  # "invalid", "spent" (inputs), "conflicting", "tip" (below max depth)


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
    group_size: dict[str, int] = {}
    for bundle_hash in pending:
        group_size[root(bundle_hash)] = group_size.get(root(bundle_hash), 0) + 1
    seen: list[BundleSeen] = []
    per_address: dict[str, int] = {}
    for (address, group), (value, bundle_hash) in sorted(best.items()):
        if per_address.get(address, 0) < PER_ADDRESS:
            per_address[address] = per_address.get(address, 0) + 1
            bundle = pending[bundle_hash]
            seen.append(
                BundleSeen(
                    bundle_hash,
                    address,
                    value,
                    False,
                    inputs=frozenset(bundle.inputs),
                    ready=bundle.ready,
                    contested=group_size[group] > 1,
                )
            )
    return seen


def _contested(pending: dict[str, _Bundle]) -> set[str]:
    """Pending bundles spending an input another pending bundle spends too."""
    spenders: dict[str, set[str]] = {}
    for bundle_hash, bundle in pending.items():
        for address in bundle.inputs:
            spenders.setdefault(address, set()).add(bundle_hash)
    return {h for group in spenders.values() if len(group) > 1 for h in group}


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
        self._lock = threading.Lock()
        self._pending = _Lru(CACHE_SIZE)  # bundle hash -> _Bundle, valid, not confirmed yet
        # bundle hash -> (its attachments when it was found unable to confirm, the bundle, or
        # None if invalid); looked at again only if a new attachment shows up.
        self._dropped = _Lru(CACHE_SIZE)
        # Bundles seen contested (sharing an input with another pending bundle), for good.
        self._contested = _Lru(CACHE_SIZE)
        self._tried = _Lru(CACHE_SIZE)  # bundle hash -> tails found valid, or invalid for good
        self._failed = _Lru(CACHE_SIZE)  # tail -> (failed attempts, monotonic time of the next)
        self._turn = 0

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
        if address[80] not in ternary.ZERO_LAST_TRIT:
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

        The work does not grow with what strangers attach: an attachment (tail) is validated
        once (cached by bundle hash), at most TAILS_PER_CALL per call with the addresses served
        in turn, and at most MAX_TAILS per bundle ever; pending bundles that cannot confirm
        drop out for good: those whose inputs' confirmed balances no longer cover them (another
        bundle spent them) and those the node calls conflicting; invalid ones, and those below
        max depth, come back only with a new attachment. Of pending bundles spending a common
        input at most one can confirm, so each address counts the largest of such a group,
        and PER_ADDRESS bundles at most. `recheck_dropped` (for evidence, once per payment)
        asks again whether a dropped valid bundle confirmed after all (its inputs may have
        been funded by a transfer confirmed in the same milestone).
        """
        with self._lock:  # the watcher and API threads (order cancellation) share the caches
            return self._bundles_paying(addresses, recheck_dropped)

    def next_look_s(self) -> float | None:
        """Seconds until a failed attachment is validated again or a not-yet-solid bundle's
        tip asked again (None: nothing waits): the watcher polls then rather than at its
        interval, so a payment is seen as soon as the node can tell."""
        with self._lock:
            now = time.monotonic()
            # Only what falls due later: a retry already due that no poll takes up (its
            # address no longer watched) must not keep the watcher spinning.
            times = [t for _attempts, t in self._failed.values() if t > now]
            times += [
                b.next_tip_check
                for b in self._pending.values()
                if b.unknown_checks and b.next_tip_check > now
            ]
            return min(times) - now if times else None

    def bundle_state(self, bundle_hash: str) -> str:
        """What this process's pending view knows of a bundle: "confirmed", "pending",
        "contested" (pending, and another bundle spends its inputs), "dropped:<why>" (spent,
        conflicting, tip, invalid) or "unknown" (not looked at since this process started)."""
        with self._lock:
            if bundle_hash in self._confirmed:
                return "confirmed"
            if bundle_hash in self._contested:
                return "contested"
            if bundle_hash in self._pending:
                return "pending"
            dropped: _Dropped | None = self._dropped.get(bundle_hash)
            return f"dropped:{dropped.why}" if dropped is not None else "unknown"

    def _bundles_paying(self, addresses: Sequence[str], recheck_dropped: bool) -> list[BundleSeen]:
        wanted = set(addresses)
        by_bundle: dict[str, set[str]] = {}
        attachments: dict[str, set[str]] = {}
        for tx_hash, tx in self._value_transactions(list(addresses)):
            if tx.value > 0 and tx.address in wanted:
                by_bundle.setdefault(tx.bundle_hash, set()).add(tx.address)
                attachments.setdefault(tx.bundle_hash, set()).add(tx_hash)
        seen: list[BundleSeen] = []
        pending: dict[str, _Bundle] = {}
        work: dict[str, list[str]] = {}  # address -> bundles with attachments to validate
        for bundle_hash in sorted(by_bundle):
            known = attachments[bundle_hash]
            if bundle_hash in self._confirmed:
                self._emit(seen, bundle_hash, self._confirmed[bundle_hash], by_bundle, True)
                continue
            dropped: _Dropped | None = self._dropped.get(bundle_hash)
            if dropped is not None:
                # Invalid or below max depth: a new attachment may be the valid or reattached
                # one (up to MAX_TAILS tried); inputs spent or conflicting: never again.
                revivable = dropped.why in ("invalid", "tip") and not self._tried_out(bundle_hash)
                if not revivable or known <= dropped.attachments:
                    if recheck_dropped and dropped.bundle is not None:
                        pending[bundle_hash] = dropped.bundle  # inclusion only: see _settle
                    continue
            bundle = self._pending.get(bundle_hash) if dropped is None else None
            if bundle is not None:
                pending[bundle_hash] = bundle
                if known <= bundle.attachments or self._tried_out(bundle_hash):
                    continue
            work.setdefault(min(by_bundle[bundle_hash]), []).append(bundle_hash)
        self._validate_some(work, attachments, pending, now_complete=recheck_dropped)
        if pending:
            self._settle(pending)
        for bundle_hash in sorted(pending):
            if bundle_hash in self._confirmed:
                self._emit(seen, bundle_hash, self._confirmed[bundle_hash], by_bundle, True)
            if bundle_hash in self._confirmed or bundle_hash in self._dropped:
                del pending[bundle_hash]
        seen.extend(_counted(pending, by_bundle))
        for bundle_hash in _contested(pending):
            self._contested.put(bundle_hash, True)
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
        confirmed = self._confirmed_among(pending)
        for bundle_hash in confirmed:
            self._confirmed.put(bundle_hash, pending[bundle_hash])
            self._pending.pop(bundle_hash, None)
            self._dropped.pop(bundle_hash, None)
        alive = {h: b for h, b in pending.items() if h not in confirmed and h not in self._dropped}
        inputs = sorted({a for b in alive.values() for a in b.inputs})
        if inputs:
            balances = self.confirmed_balances(inputs).values
            spent = {
                h: b
                for h, b in alive.items()
                if any(balances.get(a, 0) < v for a, v in b.inputs.items())
            }
            # A milestone between the two readings: the bundle may have spent them itself.
            for bundle_hash in self._confirmed_among(spent):
                self._confirmed.put(bundle_hash, spent.pop(bundle_hash))
                self._pending.pop(bundle_hash, None)
                del alive[bundle_hash]
            for bundle_hash, bundle in spent.items():
                self._drop(bundle_hash, bundle, "spent")  # by another bundle
        now = time.monotonic()
        due = [(h, b) for h, b in alive.items() if h in self._pending and b.next_tip_check <= now]
        # The longest waiting first: bundles that never become solid cannot hold the budget.
        due.sort(key=lambda item: item[1].next_tip_check)
        for bundle_hash, bundle in due[:TIP_CHECKS_PER_CALL]:
            states = [self._tip_state(tail) for tail in bundle.tails]
            bundle.ready = "live" in states and "conflicting" not in states
            if bundle.ready or "unknown" not in states:
                bundle.unknown_checks = 0
                bundle.next_tip_check = now + TIP_CHECK_INTERVAL_S
            else:
                # Not solid yet: asked again soon (instant access waits for this answer), less
                # and less often (0.3, 0.6, 1.2 ... 10 s) for one that never becomes solid.
                bundle.unknown_checks += 1
                pause = TIP_RECHECK_S * 2 ** min(bundle.unknown_checks - 1, 6)
                bundle.next_tip_check = now + min(pause, TIP_CHECK_INTERVAL_S)
            if "conflicting" in states:
                self._drop(bundle_hash, bundle, "conflicting")
            elif states and all(state == "tip" for state in states):
                self._drop(bundle_hash, bundle, "tip")  # below max depth: may be reattached

    def _confirmed_among(self, bundles: dict[str, _Bundle]) -> set[str]:
        """The bundles of which a valid attachment is confirmed (getInclusionStates)."""
        tails = {t: h for h, b in bundles.items() for t in b.tails}
        confirmed: set[str] = set()
        for chunk in _chunks(list(tails), LIST_LIMIT):
            states = self._call("getInclusionStates", transactions=list(chunk))["states"]
            confirmed |= {tails[t] for t, ok in zip(chunk, states, strict=True) if ok}
        return confirmed

    def _tip_state(self, tail: str) -> str:
        """ "conflicting", "tip" (below max depth: only a reattachment can confirm), "live",
        or "unknown" (not solid yet: the node refuses to tell)."""
        try:
            info = self._call("getTipInfo", tailTransaction=tail)
        except LedgerUnavailableError:
            return "unknown"  # looked at again later
        if info.get("conflicting"):
            return "conflicting"
        return "tip" if info.get("shouldReattach") else "live"

    def _drop(self, bundle_hash: str, bundle: _Bundle, why: str) -> None:
        log.debug("bundle %s cannot confirm (%s): dropped from the pending view", bundle_hash, why)
        self._pending.pop(bundle_hash, None)
        self._dropped.put(bundle_hash, _Dropped(frozenset(bundle.attachments), bundle, why))

    def _tried_out(self, bundle_hash: str) -> bool:
        return len(self._tried.get(bundle_hash, ())) >= MAX_TAILS

    def _validate_some(
        self,
        work: dict[str, list[str]],
        attachments: dict[str, set[str]],
        into: dict[str, _Bundle],
        now_complete: bool = False,
    ) -> None:
        """Validate attachments within TAILS_PER_CALL, one bundle per address in turn (the
        first address served rotates), so one address's flood cannot starve another's."""
        queues = [work[a] for a in sorted(work)]
        if not queues:
            return
        self._turn += 1
        start = self._turn % len(queues)
        queues = queues[start:] + queues[:start]
        budget = TAILS_PER_CALL
        while budget > 0 and any(queues):
            for queue in queues:
                if not queue or budget <= 0:
                    continue
                bundle_hash = queue.pop(0)
                known = attachments[bundle_hash]
                bundle, used, exhausted = self._validate(bundle_hash, known, budget, now_complete)
                budget -= max(1, used)
                if bundle is not None:
                    self._dropped.pop(bundle_hash, None)
                    self._pending.put(bundle_hash, bundle)
                    into[bundle_hash] = bundle
                elif exhausted:
                    self._dropped.put(bundle_hash, _Dropped(frozenset(known), None, "invalid"))
                    into.pop(bundle_hash, None)

    def _failed_once(self, tail: str, tried: set[str], now: float) -> None:
        attempts = self._failed.get(tail, (0, 0.0))[0] + 1
        if attempts > len(VALIDATE_RETRY_S):
            tried.add(tail)  # invalid for good
            self._failed.pop(tail, None)
        else:
            self._failed.put(tail, (attempts, now + VALIDATE_RETRY_S[attempts - 1]))

    def _validate(
        self, bundle_hash: str, attachments: set[str], budget: int, now_complete: bool = False
    ) -> tuple[_Bundle | None, int, bool]:
        """Check up to `budget` attachments not tried before (MAX_TAILS per bundle ever).

        `now_complete`: the caller knows value arrived (evidence for a confirmed increase), so
        a tail that failed while its bundle was still arriving is tried without its pause.

        Returns the bundle if one attachment is valid and signed (with every valid tail found
        so far), how many were checked, and whether none is left to try.
        """
        found = [str(h) for h in self._call("findTransactions", bundles=[bundle_hash])["hashes"]]
        txs = dict(self._transactions(found))
        tried: set[str] = set(self._tried.get(bundle_hash, ()))
        known: _Bundle | None = self._pending.get(bundle_hash)
        dropped: _Dropped | None = self._dropped.get(bundle_hash)
        if known is None and dropped is not None:
            known = dropped.bundle
        now = time.monotonic()
        tails = [h for h in found if h in txs and txs[h].current_index == 0 and h not in tried]
        # A tail that failed may be a bundle still arriving (the node stores its transactions
        # one by one): looked at again after each pause of VALIDATE_RETRY_S.
        due = [t for t in tails if now_complete or self._failed.get(t, (0, 0.0))[1] <= now]
        room = max(0, MAX_TAILS - len(tried))
        valid = list(known.tails) if known is not None else []
        outputs = known.outputs if known is not None else None
        inputs = known.inputs if known is not None else {}
        used = 0
        for tail in due[: min(budget, room)]:
            used += 1
            try:
                bundle_txs = self.api.get_bundles(TransactionHash(tail.encode()))["bundles"][0]
            except (BadApiResponse, ValueError) as exc:
                log.debug("bundle %s tail %s is not valid: %s", bundle_hash, tail, exc)
                self._failed_once(tail, tried, now)
                continue
            except OSError as exc:
                raise LedgerUnavailableError(f"getBundles: {exc}") from exc
            if str(bundle_txs.hash) != bundle_hash:
                self._failed_once(tail, tried, now)
                continue
            tried.add(tail)
            self._failed.pop(tail, None)
            valid.append(tail)
            if outputs is None:
                outputs, inputs = {}, {}
                for tx in bundle_txs:
                    into = outputs if tx.value > 0 else inputs
                    if tx.value:
                        into[str(tx.address)] = into.get(str(tx.address), 0) + abs(tx.value)
        self._tried.put(bundle_hash, frozenset(tried))
        exhausted = len(tried) >= MAX_TAILS or all(t in tried for t in tails)
        if outputs is None:
            return None, used, exhausted
        return _Bundle(outputs, inputs, tuple(valid), frozenset(attachments)), used, exhausted

    def messages_paying(self, bundle_hash: str, address: str) -> tuple[list[str], bool]:
        # Two lists, each capped by the node at LIST_LIMIT: the bundle's transactions (Hornet
        # lists a bundle's tails last) and the address's value transactions. A stranger must
        # flood both to hide an attachment; `complete` says neither list was cut.
        by_bundle = self._call("findTransactions", bundles=[bundle_hash])["hashes"]
        by_address = self._call("findTransactions", addresses=[address], valueOnly=True)["hashes"]
        complete = len(by_bundle) < LIST_LIMIT and len(by_address) < LIST_LIMIT
        hashes = sorted({str(h) for h in by_bundle} | {str(h) for h in by_address})
        messages: dict[str, None] = {}
        for chunk in _chunks(hashes, LIST_LIMIT):
            answer = self._call("getTrytes", hashes=list(chunk))["trytes"]
            for tx_hash, trytes in zip(chunk, answer, strict=True):
                if not str(trytes).strip("9"):
                    continue  # not stored (yet)
                # The hash as the node names it: parsing without it would run Curl (slow).
                tx = Transaction.from_tryte_string(trytes, hash_=TransactionHash(tx_hash))
                if (
                    str(tx.bundle_hash) == bundle_hash
                    and str(tx.address) == address
                    and tx.value > 0
                ):
                    messages[str(tx.signature_message_fragment)] = None
        return list(messages), complete

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
