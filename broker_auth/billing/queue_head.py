"""This process's copy of the head of the free deposit-address queue (billing/pool.py `take`).

Reading the head means reading the whole pool on FerretDB (it scans for any query but an
`_id` equality): a sorted read of 1,250 addresses took 2.9 s under the chaos soak's load, once
per order. So a process reads HEAD_BATCH at a time and hands them out in order, each one read
again by `_id` first. The copy is a hint, never the truth:
- each entry keeps the `queued_at` it was read with: an address taken and let go since is
  queued behind the rest, and its new `queued_at` tells the taker to skip it (else a released
  address would come straight back, to the next buyer, with the last one's payment in flight);
- a copy older than `max_age_s` is read again (another replica's hand-outs and releases);
- an address one thread is handing out is not given to another thread of the process, and a
  refill while it is in flight leaves it out;
- one refill at a time: threads that find the copy used up wait for the one reading it.
Between processes the unique index on `orders.address` decides (see pool.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

HEAD_BATCH = 32
HEAD_MAX_AGE_S = 30.0


@dataclass(frozen=True)
class Candidate:
    address: str
    queued_at: object  # as stored: equal on the re-read unless it was queued again since


# (addresses to leave out, how many) -> the free queue's head, in hand-out order
ReadHead = Callable[[set[str], int], Iterable[Candidate]]


class QueueHead:
    def __init__(
        self,
        read: ReadHead,
        batch: int = HEAD_BATCH,
        max_age_s: float = HEAD_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._batch = batch
        self._max_age_s = max_age_s
        self._clock = clock
        self._entries: deque[Candidate] = deque()
        self._read_at = float("-inf")
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()  # the entries and the in-flight set
        self._refill_lock = threading.Lock()  # one read of the head at a time

    def next(self, skipped: set[str]) -> Candidate | None:
        """The next address to try (in flight until `done`), or None: read the head again."""
        with self._lock:
            if self._clock() - self._read_at > self._max_age_s:
                self._entries.clear()
            while self._entries:
                candidate = self._entries.popleft()
                if candidate.address not in skipped and candidate.address not in self._in_flight:
                    self._in_flight.add(candidate.address)
                    return candidate
        return None

    def done(self, address: str) -> None:
        """The address was handed out or passed over: a refill may read it again."""
        with self._lock:
            self._in_flight.discard(address)

    def refill(self, skipped: set[str]) -> bool:
        """Read the head again, unless another thread just did; False if nothing is free."""
        with self._refill_lock:
            with self._lock:
                if self._entries and self._clock() - self._read_at <= self._max_age_s:
                    return True  # read by the thread we waited for
                leave_out = skipped | self._in_flight
            read_at = self._clock()
            head = [c for c in self._read(leave_out, self._batch) if c.address not in leave_out]
            with self._lock:
                self._entries = deque(c for c in head if c.address not in self._in_flight)
                self._read_at = read_at
            return bool(head)
