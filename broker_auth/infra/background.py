"""The thread lifecycle shared by the service's background workers (payment watcher, expiry
scheduler, reconciler, event writer): start, wake early, stop and wait for the current pass."""

from __future__ import annotations

import threading


class BackgroundWorker:
    """A daemon thread running `_run` until `stop()`. Subclasses loop on `_pause()`."""

    join_timeout_s = 10.0

    def __init__(self, name: str) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.join_timeout_s)

    def wake(self) -> None:
        """Cut the current pause short (new work has arrived)."""
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds` or until woken or stopped; True when stopping."""
        self._wake.wait(seconds)
        self._wake.clear()
        return self._stop.is_set()

    def _run(self) -> None:
        raise NotImplementedError
