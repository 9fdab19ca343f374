"""Ends grants on time: sleeps until the earliest end, then revokes everything that is due.

On start-up the first pass revokes whatever ended while the service was down. The thread is
woken early whenever a grant changes; it also re-reads MongoDB at least once a second.
"""

from __future__ import annotations

import logging
import threading

from pymongo.errors import PyMongoError

from broker_auth.clock import utcnow
from broker_auth.grants import Grants

log = logging.getLogger(__name__)

MAX_SLEEP_S = 1.0
# BSON dates keep milliseconds: wake a little after the end so it compares as passed.
MARGIN_S = 0.005


class ExpiryScheduler:
    def __init__(self, grants: Grants) -> None:
        self.grants = grants
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="expiry", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        store_down = False
        while not self._stop.is_set():
            sleep = MAX_SLEEP_S
            try:
                self.grants.expire_due()
                nxt = self.grants.next_expiry()
                if nxt is not None:
                    until = (nxt - utcnow()).total_seconds() + MARGIN_S
                    sleep = min(MAX_SLEEP_S, max(0.01, until))
                if store_down:
                    log.info("expiry: MongoDB reachable again")
                store_down = False
            except PyMongoError as exc:
                if not store_down:
                    log.warning("expiry: MongoDB unavailable (%s)", type(exc).__name__)
                store_down = True
            except Exception:
                log.exception("expiry pass failed")
            self._wake.wait(sleep)
            self._wake.clear()
