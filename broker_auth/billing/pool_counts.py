"""The deposit-address pool's counts by state, read at most once per `max_age_s`.

Counting reads the whole pool (FerretDB scans for anything but an `_id`), and `/healthz` and
`/metrics`, which ask, are open to anyone: they get counts at most COUNTS_MAX_AGE_S old, with
this process's own hand-outs and releases applied at once. One read at a time: the threads that
want fresh counts meanwhile wait for it; a hand-out or release never waits for a read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

COUNTS_MAX_AGE_S = 5.0


class PoolCounts:
    def __init__(
        self, read: Callable[[], dict[str, int]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self._clock = clock
        self._counts: dict[str, int] | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()  # the counts
        self._read_lock = threading.Lock()  # one read of the store at a time

    def get(self, max_age_s: float = 0.0) -> dict[str, int]:
        """The counts, read from the store unless the last read is under `max_age_s` old."""
        fresh = self._fresh(max_age_s)
        if fresh is not None:
            return fresh
        with self._read_lock:
            fresh = self._fresh(max_age_s)  # read by the thread we waited for
            if fresh is not None:
                return fresh
            read_at = self._clock()
            counts = self._read()
            with self._lock:
                self._counts, self._read_at = dict(counts), read_at
            return dict(counts)

    def _fresh(self, max_age_s: float) -> dict[str, int] | None:
        with self._lock:
            if self._counts is not None and self._clock() - self._read_at < max_age_s:
                return dict(self._counts)
        return None

    def move(self, **moves: int) -> None:
        """This process's own hand-out or release, applied to the last read (never below 0:
        a read during the move may have counted it already)."""
        with self._lock:
            if self._counts is not None:
                for state, move in moves.items():
                    self._counts[state] = max(0, self._counts.get(state, 0) + move)

    def none_free(self) -> None:
        """A hand-out found no free address."""
        with self._lock:
            if self._counts is not None:
                self._counts["free"] = 0
