"""In-memory sliding-window limits: failed logins per username and per client address, and
sign-ups per address. Per process, which is enough for one API instance; the windows are short
so a restart forgets little that matters.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque


class SlidingWindow:
    """At most `limit` events per `window_s` seconds per key."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def retry_after(self, key: str) -> float | None:
        """Seconds to wait if the key is over its limit, else None."""
        now = time.monotonic()
        with self._lock:
            events = self._trim(key, now)
            if events is None or len(events) < self.limit:
                return None
            return max(0.0, events[0] + self.window_s - now)

    def add(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            events = self._trim(key, now)
            if events is None:
                events = self._events[key] = deque(maxlen=self.limit)
            events.append(now)
            self._events.move_to_end(key)
            # Bounded memory: forget the least recently active keys first.
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
