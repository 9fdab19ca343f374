"""`make run`'s seller: Jane's local seed and the deposit addresses derived from it.

The first run creates `.data/seller.seed` (mode 0600; local only, never given to broker_auth)
and writes `DEPOSIT_POOL_TARGET` addresses derived from it to `.data/deposit-addresses.txt`,
which broker_auth loads at start (IOTA_DEPOSIT_ADDRESSES_FILE). While the stack runs, a thread
keeps that many free addresses in the pool: below half of it, the next addresses of the seed
are derived, appended to the file and given to broker_auth (POST /api/deposit-addresses).
Demo money paid to them can be swept with `iot-wallet sweep --seed-file .data/seller.seed`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import urllib.error
import urllib.request
from pathlib import Path

from wallet import seller, ternary

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

    def top_up_once(self, api_url: str, admin_token: str) -> int:
        """Derive and add addresses when fewer than half the target are free; returns added."""
        request = urllib.request.Request(
            f"{api_url}/api/deposit-addresses?state=free&limit=1",
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            free = int(json.loads(r.read())["counts"]["free"])
        if free >= self.target // 2:
            return 0
        new = self.derive_more(self.target - free)
        body = json.dumps({"addresses": new}).encode()
        request = urllib.request.Request(
            f"{api_url}/api/deposit-addresses",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            added = int(json.loads(r.read())["added"])
        print(f"deposit-address pool topped up: {added} added ({free} were free)", flush=True)
        return added

    def keep_topped_up(self, api_url: str, admin_token: str) -> threading.Thread:
        stop = threading.Event()

        def run() -> None:
            while not stop.wait(CHECK_INTERVAL_S):
                try:
                    self.top_up_once(api_url, admin_token)
                except (OSError, ValueError, KeyError) as exc:  # stack restarting: next time
                    log.debug("pool top-up skipped: %s", exc)

        thread = threading.Thread(target=run, name="pool-top-up", daemon=True)
        thread.start()
        return thread
