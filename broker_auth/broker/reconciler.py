"""Background upkeep: reconciles Mosquitto with MongoDB (at start-up, after every reconnection
to the broker, and every RECONCILE_INTERVAL_S) and reports the number of active grants."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pymongo.errors import PyMongoError

from broker_auth.broker.errors import BrokerError
from broker_auth.broker.projector import Projector
from broker_auth.errors import ServiceError
from broker_auth.infra import metrics
from broker_auth.infra.background import BackgroundWorker
from broker_auth.infra.events import EventWriter
from broker_auth.infra.leader import STANDBY_PAUSE_S

log = logging.getLogger(__name__)

RETRY_S = 2.0


class Reconciler(BackgroundWorker):
    join_timeout_s = 15.0

    def __init__(
        self,
        projector: Projector,
        active_counts: Callable[[], dict[str, int]],
        events: EventWriter | None,
        interval_s: float,
        report_interval_s: float,
        before_first: Callable[[], None] | None = None,
    ) -> None:
        super().__init__("reconciler")
        self.projector = projector
        # Active grants per product (access/grants.py), reported; a callable so the broker
        # package does not depend on the access package that depends on it.
        self.active_counts = active_counts
        self.events = events
        self.interval_s = interval_s
        self.report_interval_s = report_interval_s
        # Run once successfully before the first reconciliation (the demo seed).
        self._before_first = before_first
        self.last_ok: float | None = None
        self._requested = False  # reconcile at the next pass (broker reconnected)

    def trigger(self) -> None:
        """Reconcile now (e.g. after a reconnection to the broker)."""
        self._requested = True
        self.wake()

    def _run(self) -> None:
        next_reconcile = 0.0
        next_report = 0.0
        while not self.stopping:
            if not self.projector.leader.leads():
                self._pause(STANDBY_PAUSE_S)
                continue
            now = time.monotonic()
            if self._requested or now >= next_reconcile:
                self._requested = False
                next_reconcile = now + (self.interval_s if self._reconcile() else RETRY_S)
            if now >= next_report:
                self._report()
                next_report = now + self.report_interval_s
            metrics.BROKER_UP.set(1 if self.projector.dynsec.ready else 0)
            wait = max(0.05, min(next_reconcile, next_report) - time.monotonic())
            self._pause(wait)

    def _reconcile(self) -> bool:
        if not self.projector.dynsec.ready:
            return False
        try:
            if self._before_first is not None:
                self._before_first()
                self._before_first = None
            self.projector.reconcile()
        except (BrokerError, PyMongoError, ServiceError) as exc:
            log.warning("reconciliation postponed: %s", exc)
            return False
        except Exception:
            log.exception("reconciliation failed")
            return False
        self.last_ok = time.monotonic()
        return True

    def _report(self) -> None:
        try:
            counts = self.active_counts()
        except PyMongoError:
            return
        metrics.GRANTS_ACTIVE.set(sum(counts.values()))
        if self.events:
            self.events.grants_active(counts)
