"""Payment watcher: polls the IOTA node (pyota) for transfers to the deposit address.

Each poll is kept cheap:
- `findTransactions` on the deposit address, then `getTrytes` only for hashes not seen yet;
- inclusion (confirmation) checks only for payments that are still unconfirmed, with every
  transaction hash of the payment (a reattachment may be the one that confirms).
Confirmed payments are credited in the same pass, so access follows confirmation within one
poll interval. When the node is down the watcher retries with exponential backoff and then
catches up from `findTransactions`, which returns the whole history of the address.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

from iota import Address, Iota, Transaction, TransactionHash
from iota.adapter import HttpAdapter
from pymongo.errors import PyMongoError

from broker_auth import metrics
from broker_auth.background import BackgroundWorker
from broker_auth.grants import Grants
from broker_auth.payments import Ledger, Transfer

log = logging.getLogger(__name__)

TRYTES_CHUNK = 250


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Watcher(BackgroundWorker):
    join_timeout_s = 15.0

    def __init__(
        self,
        node_url: str,
        deposit_address: str,
        ledger: Ledger,
        grants: Grants,
        interval_s: float = 0.5,
        max_backoff_s: float = 10.0,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__("watcher")
        self.api = Iota(HttpAdapter(node_url, timeout=timeout_s))
        self.address = deposit_address
        self.ledger = ledger
        self.grants = grants
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.node_ok = False
        self.last_ok: float | None = None
        self._node_warned = False
        self._store_warned = False
        self._seen: set[str] | None = None

    def _run(self) -> None:
        backoff = self.interval_s
        while not self.stopping:
            started = time.monotonic()
            try:
                self.poll_once()
            except PyMongoError as exc:
                metrics.WATCHER_POLLS.labels("store_error").inc()
                if not self._store_warned:
                    log.warning("watcher: MongoDB unavailable (%s); retrying", type(exc).__name__)
                    self._store_warned = True
                backoff = min(backoff * 2, self.max_backoff_s)
            except Exception as exc:  # node down, timeouts, malformed answers
                metrics.WATCHER_POLLS.labels("node_error").inc()
                if not self._node_warned:
                    log.warning("watcher: IOTA node unavailable (%s); retrying with backoff", exc)
                    self._node_warned = True
                self.node_ok = False
                metrics.NODE_UP.set(0)
                backoff = min(backoff * 2, self.max_backoff_s)
            else:
                metrics.WATCHER_POLLS.labels("ok").inc()
                self._store_warned = False
                backoff = self.interval_s
            metrics.WATCHER_POLL_SECONDS.observe(time.monotonic() - started)
            self._pause(backoff)

    def _node_answered(self) -> None:
        if not self.node_ok:
            log.info("watcher: IOTA node reachable")
        self._node_warned = False
        self.node_ok = True
        self.last_ok = time.monotonic()
        metrics.NODE_UP.set(1)

    def poll_once(self) -> None:
        if self._seen is None:
            self._seen = self.ledger.known_tx_hashes()
        seen = self._seen
        found = self.api.find_transactions(addresses=[Address(self.address)])
        self._node_answered()
        new = [h for h in (str(x) for x in found["hashes"]) if h not in seen]
        for chunk in _chunks(new, TRYTES_CHUNK):
            answer = self.api.get_trytes([TransactionHash(h) for h in chunk])
            for tx_hash, trytes in zip(chunk, answer["trytes"], strict=False):
                if not str(trytes).strip("9"):
                    continue  # not stored by the node (yet): try again next poll
                tx = Transaction.from_tryte_string(trytes, hash_=TransactionHash(tx_hash))
                if str(tx.address) == self.address and tx.value > 0:
                    self.ledger.record(
                        Transfer(
                            tx_hash=tx_hash,
                            bundle_hash=str(tx.bundle_hash),
                            address=self.address,
                            tag=str(tx.tag),
                            value=int(tx.value),
                            current_index=int(tx.current_index),
                        )
                    )
                seen.add(tx_hash)
        self._check_confirmations()
        for payment in self.ledger.to_credit():
            self.grants.credit(payment)

    def _check_confirmations(self) -> None:
        pending = self.ledger.unconfirmed()
        hashes = sorted({str(h) for p in pending for h in p.get("tx_hashes", [])})
        if not hashes:
            return
        states = self.api.get_latest_inclusion([TransactionHash(h) for h in hashes])["states"]
        included = {str(h) for h, ok in states.items() if ok}
        for p in pending:
            if not included.intersection(str(h) for h in p.get("tx_hashes", [])):
                continue
            seen_at = time.monotonic()
            doc = self.ledger.mark_confirmed(str(p["_id"]))
            if doc is not None and doc.get("matched") and not doc.get("credited"):
                self.grants.credit(doc, confirmed_seen_at=seen_at)
