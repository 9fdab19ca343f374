"""The seller's pool keeper: keeps broker_auth's deposit-address pool above its low-water mark.

It runs on the seller's side with her seed (which never reaches broker_auth): every interval it
asks broker_auth (admin API) how many addresses are free and, below `low_water`, derives the
seed's next addresses offline and adds enough to reach `target`. The next key index is kept in
`<seed file>.pool-keeper` (a number, not secret); addresses broker_auth already knows, or
refuses (spent from), are skipped over. Deriving reuses the `<seed file>.index` cache.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from wallet import payments
from wallet.seller import _admin, derive_addresses

log = logging.getLogger(__name__)

MAX_ROUNDS = 50  # a top-up gives up after this many batches of known addresses


@dataclass(frozen=True)
class TopUp:
    free_before: int
    added: int
    next_index: int


class PoolKeeper:
    def __init__(
        self,
        seed: str,
        seed_file: Path,
        api_url: str,
        admin_token: str,
        low_water: int,
        target: int,
        start: int = 0,
    ) -> None:
        if target < low_water or low_water < 1:
            raise payments.WalletError("need 1 <= --low-water <= --target")
        self.seed = seed
        self.api_url = api_url
        self.token = admin_token
        self.low_water = low_water
        self.target = target
        self.start = start
        self.state_file = seed_file.with_name(seed_file.name + ".pool-keeper")
        self.index_cache = seed_file.with_name(seed_file.name + ".index")

    def next_index(self) -> int:
        if self.state_file.exists():
            text = self.state_file.read_text().strip()
            if text.isdigit():
                return max(int(text), self.start)
        return self.start

    def _save(self, index: int) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(f"{index}\n")
        tmp.replace(self.state_file)

    def free(self) -> int:
        query = urllib.parse.urlencode({"state": "free", "limit": 1})
        answer = _admin(self.api_url, self.token, "GET", f"/api/deposit-addresses?{query}")
        assert isinstance(answer, dict)
        return int(answer["counts"]["free"])

    def top_up_once(self) -> TopUp:
        free = self.free()
        index = self.next_index()
        if free >= self.low_water:
            return TopUp(free, 0, index)
        added = 0
        for _round in range(MAX_ROUNDS):
            want = self.target - free - added
            if want <= 0:
                break
            batch = derive_addresses(self.seed, index, want, self.index_cache)
            answer = _admin(
                self.api_url, self.token, "POST", "/api/deposit-addresses", {"addresses": batch}
            )
            assert isinstance(answer, dict)
            index += len(batch)
            self._save(index)  # known or refused ones are never offered again
            added += int(answer["added"])
        return TopUp(free, added, index)

    def run(self, interval_s: float) -> None:
        """Top up forever; broker_auth being down is waited out."""
        while True:
            try:
                result = self.top_up_once()
            except payments.WalletError as exc:
                log.warning("pool keeper: %s; trying again in %g s", exc, interval_s)
            else:
                if result.added:
                    log.info(
                        "deposit-address pool topped up: %d added (%d were free; next key"
                        " index %d)",
                        result.added,
                        result.free_before,
                        result.next_index,
                    )
            time.sleep(interval_s)
