"""Ends grants on time: sleeps until the earliest end, then revokes everything that is due;
and tells each buyer GRANT_ENDING_NOTICE_S before a grant ends (`grant_ending`).

It also carries out the grant-role syncs requested in MongoDB (Projector.run_grant_syncs): a
standby's request after it wrote a buyer's client (only the leader writes grant roles),
and the retries, with backoff, of a revocation the broker did not take.

On start-up the first pass revokes whatever ended while the service was down. The thread is
woken early whenever a grant changes; it also re-reads MongoDB at least once a second.
"""

from __future__ import annotations

import logging

from pymongo.errors import PyMongoError

from broker_auth.access.grants import Grants
from broker_auth.infra.background import BackgroundWorker
from broker_auth.infra.clock import utcnow
from broker_auth.infra.leader import STANDBY_PAUSE_S

log = logging.getLogger(__name__)

MAX_SLEEP_S = 1.0
# BSON dates keep milliseconds: wake a little after the end so it compares as passed.
MARGIN_S = 0.005


class ExpiryScheduler(BackgroundWorker):
    def __init__(self, grants: Grants, ending_notice_s: float = 300.0) -> None:
        super().__init__("expiry")
        self.grants = grants
        self.ending_notice_s = ending_notice_s

    def _run(self) -> None:
        store_down = False
        while not self.stopping:
            if not self.grants.leader.leads():
                self._pause(STANDBY_PAUSE_S)
                continue
            sleep = MAX_SLEEP_S
            try:
                next_grant = self.grants.expiry_pass(self.ending_notice_s)
                next_sync = self.grants.projector.run_grant_syncs()
                due = [t for t in (next_grant, next_sync) if t is not None]
                if due:
                    until = (min(due) - utcnow()).total_seconds() + MARGIN_S
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
            self._pause(sleep)
