"""`make run`'s seller: Jane's local seed and the deposit addresses derived from it.

The first run creates `.data/seller.seed` (mode 0600; local only, never given to broker_auth)
and writes `DEPOSIT_POOL_TARGET` addresses derived from it to `.data/deposit-addresses.txt`,
which broker_auth loads at start (IOTA_DEPOSIT_ADDRESSES_FILE). While the stack runs, the
seller's `iot-wallet pool-keeper` (a supervised process, as a seller would run it) derives the
seed's next addresses and adds them whenever fewer than half the target are free.
Demo money paid to them can be swept with `iot-wallet sweep --seed-file .data/seller.seed`.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from broker_auth.ledger import ternary
from wallet import seller

log = logging.getLogger(__name__)

SEED_FILE = "seller.seed"
POOL_FILE = "deposit-addresses.txt"
CHECK_INTERVAL_S = 30.0


class SellerPool:
    def __init__(self, data_dir: Path, target: int) -> None:
        self.seed_file = data_dir / SEED_FILE
        self.pool_file = data_dir / POOL_FILE
        self.target = target

    def seed(self) -> str:
        if not self.seed_file.exists():
            self.seed_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.seed_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write("".join(secrets.choice(ternary.ALPHABET) for _ in range(81)) + "\n")
        return self.seed_file.read_text().strip()

    def derived(self) -> list[str]:
        if not self.pool_file.exists():
            return []
        return [a for a in self.pool_file.read_text().split() if a]

    def derive_more(self, count: int) -> list[str]:
        known = self.derived()
        cache = self.seed_file.with_name(self.seed_file.name + ".index")
        new = seller.derive_addresses(self.seed(), len(known), count, cache)
        with open(self.pool_file, "a") as f:
            f.writelines(f"{a}\n" for a in new)
        return new

    def ensure_file(self) -> None:
        if len(self.derived()) < self.target:
            print(f"deriving {self.target} deposit addresses from {self.seed_file}...", flush=True)
            self.derive_more(self.target - len(self.derived()))
