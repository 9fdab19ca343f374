"""Log a recurring problem at most once per interval per kind, with a count of the ones skipped."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """Not thread-safe: give each thread its own instance."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._logger = logger
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> bool:
        """Log `message` unless `kind` was logged less than the interval ago; True if logged."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return False
        skipped = self._skipped.pop(kind, 0)
        suffix = f" ({skipped} more since the last such message)" if skipped else ""
        self._logger.warning(message + suffix, *args)
        self._last[kind] = now
        return True
