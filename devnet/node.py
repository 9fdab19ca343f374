"""The devnet node: the tangle plus what a node does on top of it (PoW, faucet, milestones)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from devnet import journal, speedups, ternary, transaction
from devnet.faucet import Faucet
from devnet.tangle import CONFIRMED, NodeError, Tangle

log = logging.getLogger(__name__)

# PoW runs in pure Python (3**mwm transforms of ~0.5 ms each on average): refuse weights that
# would take minutes instead of silently doing less work than asked.
MAX_POW_WEIGHT = 9


class Node:
    def __init__(self, min_weight_magnitude: int = 1, data_dir: Path | None = None) -> None:
        self.min_weight_magnitude = min_weight_magnitude
        speedups.install()  # signature checks and the faucet's signing use PyOTA's Kerl
        self.faucet = Faucet()
        self.started = time.time()
        records: list[journal.Record] = []
        store: journal.Journal | None = None
        if data_dir is not None:
            path = data_dir / "journal.jsonl"
            records = list(journal.read(path))
            store = journal.Journal(path)
        self.tangle = Tangle(min_weight_magnitude, {self.faucet.address: ternary.SUPPLY}, store)
        if records:
            self.tangle.replay(records)
            log.info(
                "replayed %d journal records: %d transactions, milestone %d",
                len(records),
                len(self.tangle.txs),
                self.tangle.latest_index,
            )
        if not self.tangle.milestones:
            self.tangle.issue_milestone()  # there is always a milestone to reference
        self._faucet_lock = threading.Lock()

    def attach(
        self, trytes_head_first: list[str], trunk: str, branch: str, min_weight_magnitude: int
    ) -> list[str]:
        if min_weight_magnitude < self.min_weight_magnitude:
            raise NodeError(
                f"Invalid minWeightMagnitude: this node requires {self.min_weight_magnitude}"
            )
        if min_weight_magnitude > max(MAX_POW_WEIGHT, self.min_weight_magnitude):
            raise NodeError(
                f"minWeightMagnitude {min_weight_magnitude} is too high for the devnet's Python"
                f" PoW (at most {MAX_POW_WEIGHT}; the node requires {self.min_weight_magnitude})"
            )
        try:
            attached = transaction.attach(trytes_head_first, trunk, branch, min_weight_magnitude)
        except transaction.InvalidTransactionError as exc:
            raise NodeError(str(exc)) from None
        self.tangle.remember_hashes(attached)
        return [trytes for trytes, _ in attached]

    def credit(self, address: str, value: int) -> dict[str, object]:
        """Faucet: a signed bundle from the genesis address, confirmed by a milestone at once."""
        with self._faucet_lock:
            available = self.tangle.confirmed_balances([self.faucet.address])[0]
            if value > available:
                raise NodeError(f"the faucet has only {available} iota left")
            bundle = self.faucet.credit_bundle(address, value)
            reference = self.tangle.latest.hash
            attached = transaction.attach(bundle, reference, reference, self.min_weight_magnitude)
            self.tangle.remember_hashes(attached)
            self.tangle.store([trytes for trytes, _ in attached])
            tail = attached[0][1]
            self.tangle.issue_milestone()
            inst = self.tangle.instance_of(tail)
            if inst is None or inst.state != CONFIRMED:
                raise NodeError("the faucet credit could not be confirmed")
            balance = self.tangle.confirmed_balances([address])[0]
            log.info("faucet credited %d iota to %s (tail %s)", value, address, tail)
            return {
                "address": address,
                "value": value,
                "balance": balance,
                "bundle": inst.bundle,
                "transaction": tail,
                "milestoneIndex": inst.confirmed_at,
            }

    def run_milestones(self, interval: float, stop: threading.Event) -> None:
        while not stop.wait(interval):
            try:
                self.tangle.issue_milestone()
            except Exception:  # keep the coordinator alive; the log says why
                log.exception("issuing a milestone failed")

    def close(self) -> None:
        with self.tangle.lock:
            self.tangle.close()
