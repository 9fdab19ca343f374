"""The leader: which one of the broker_auth replicas runs the background roles.

`Leader` is what the rest of broker_auth asks (`leader.leads()`) and the lock every grant change
holds (`leader.grants_lock`); `PaymentsLease` is how replicas agree on it.

Every replica serves the API; the watcher, expiry, reconciliation and the outbox drainer run
only in the one that holds the lease, kept in MongoDB (`leases`) as one document per epoch,
`{_id: "payments:<epoch>", holder, expires_at}`, found by `_id` only.

- Take: when the newest epoch has expired (or none exists), insert the next epoch. The unique
  `_id` makes exactly one of racing replicas win: FerretDB has no transactions and its
  findAndModify is not atomic under concurrency (measured: 5 of 8 racing takers "won" a
  compare-and-set on one document), so no update decides who leads.
- Renew: every LEASE_TTL_S / 3 the holder moves its own epoch's `expires_at`, and only while
  its lease is still valid; a lapsed holder goes through take-over like anyone else. A renewal
  whose answer comes back after the holder's fence (a slow store) is given up: a standby may
  have read the lease expired before it landed, and taken it after the holder looked.
- Fencing: a replica counts the lease as held until `LEASE_TTL_S - LEASE_SAFETY_S` after the
  moment it *sent* its last renewal (monotonic clock), never longer. The others take it only
  once `expires_at` (the holder's wall clock at that moment + LEASE_TTL_S) has passed, so a
  replica that lost the lease (paused, cut off from MongoDB) has stopped writing grants to the
  broker before anyone else starts. The margin covers clock offsets between machines.
- Hand-over: a standby looks again when the lease it saw expires (at most STANDBY_MAX_PAUSE_S
  later, at least STANDBY_POLL_S), so it takes the lease within ~0.1 s of its expiry, i.e.
  within LEASE_TTL_S (+0.1 s) of the holder's death; a clean stop releases it at once, taken
  within STANDBY_MAX_PAUSE_S. (Looking every 0.1 s cost 30 reads a second per standby: half
  of what a saturated FerretDB served in the chaos soak.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from pymongo.errors import DuplicateKeyError, PyMongoError

from broker_auth.infra import metrics
from broker_auth.infra.background import BackgroundWorker
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store

log = logging.getLogger(__name__)

LEASE_ID = "payments"
STANDBY_POLL_S = 0.1
STANDBY_MAX_PAUSE_S = 1.0
# How long a background role that runs once cluster-wide waits before asking again.
STANDBY_PAUSE_S = 0.2


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class PaymentsLease(BackgroundWorker):
    def __init__(
        self,
        store: Store,
        ttl_s: float = 5.0,
        safety_s: float = 1.0,
        holder: str | None = None,
        on_gained: Callable[[], None] | None = None,
        housekeeping: Callable[[], object] | None = None,
        housekeeping_interval_s: float = 60.0,
    ) -> None:
        super().__init__("lease")
        if not 0 <= safety_s < ttl_s:
            raise ValueError("LEASE_SAFETY_S must be below LEASE_TTL_S")
        self.store = store
        self.ttl_s = ttl_s
        self.safety_s = safety_s
        self.holder = holder or default_holder()
        self.on_gained = on_gained
        self.housekeeping = housekeeping
        self.housekeeping_interval_s = housekeeping_interval_s
        self.epoch = 0
        self._last_sent = 0.0
        self._valid_until = 0.0  # monotonic; 0: not held
        self._known = 0  # the newest epoch seen
        self._seen_until: dt.datetime | None = None  # when the lease another holds expires
        self._lock = threading.Lock()
        self._warned = False

    def held(self) -> bool:
        """True while we may act as the leader (and write grants to the broker)."""
        return time.monotonic() < self._valid_until

    def _doc_id(self, epoch: int) -> str:
        return f"{LEASE_ID}:{epoch}"

    def _current(self) -> Doc | None:
        """The newest epoch's document: probed forward from the last one known, `_id` only."""
        leases = self.store.leases
        # The hint is for a fresh start; from a known epoch, probing forward finds the newest.
        hint = None if self._known else leases.find_one({"_id": f"{LEASE_ID}:hint"})
        epoch = max(self._known, int(hint["epoch"]) if hint else 0)
        doc = leases.find_one({"_id": self._doc_id(epoch)}) if epoch else None
        while True:
            newer = leases.find_one({"_id": self._doc_id(epoch + 1)})
            if newer is None:
                break
            epoch, doc = epoch + 1, newer
        self._known = epoch
        return doc

    def try_once(self) -> bool:
        """Renew or take the lease; returns whether we hold it afterwards."""
        sent = self._last_sent = time.monotonic()
        now = utcnow()
        expires = now + dt.timedelta(seconds=self.ttl_s)
        leases = self.store.leases
        with self._lock:
            gained = False
            if self.epoch and self.held():
                # Renew only while still valid: once lapsed we go through take-over like anyone,
                # so nobody can have read our lease as expired before this renewal lands.
                leases.update_one(
                    {"_id": self._doc_id(self.epoch), "holder": self.holder},
                    {"$set": {"expires_at": expires}},
                )
                if time.monotonic() >= self._valid_until:
                    # It landed after our fence: a standby may have read the lease expired
                    # before, and its take-over may land after the look below. Give it up.
                    log.warning("payments lease renewal came back too late: giving it up")
                    epoch = self.epoch
                    self._lost()
                    self._expire(epoch)
                    return False
                if leases.find_one({"_id": self._doc_id(self.epoch + 1)}) is not None:
                    return self._lost()
            else:
                doc = self._current()
                if doc is not None and as_utc(doc["expires_at"]) >= now:
                    self._seen_until = as_utc(doc["expires_at"])
                    return self._lost()
                # One epoch document per take-over, inserted under the unique `_id`: of racing
                # replicas exactly one succeeds (FerretDB's findAndModify is not atomic).
                epoch = self._known + 1
                try:
                    leases.insert_one(
                        {"_id": self._doc_id(epoch), "holder": self.holder, "expires_at": expires}
                    )
                except DuplicateKeyError:
                    return self._lost()
                # Only a hint for the next start (probing goes forward from it).
                leases.update_one(
                    {"_id": f"{LEASE_ID}:hint"}, {"$set": {"epoch": epoch}}, upsert=True
                )
                self.epoch = self._known = epoch
                gained = True
            self._valid_until = sent + self.ttl_s - self.safety_s
        metrics.LEASE_HELD.set(1)
        if gained:
            log.info("payments lease taken (epoch %d, holder %s)", self.epoch, self.holder)
            if self.on_gained:
                self.on_gained()
        return True

    def _lost(self) -> bool:
        if self.epoch:
            log.warning("payments lease lost (epoch %d): standing by", self.epoch)
        self.epoch = 0
        self._valid_until = 0.0
        metrics.LEASE_HELD.set(0)
        return False

    def release(self) -> None:
        """Give the lease up now (clean stop), so another replica need not wait for the TTL."""
        with self._lock:
            epoch, self.epoch, self._valid_until = self.epoch, 0, 0.0
        metrics.LEASE_HELD.set(0)
        if epoch:
            self._expire(epoch)
            log.info("payments lease released (epoch %d)", epoch)

    def _expire(self, epoch: int) -> None:
        """Mark our epoch expired, so a standby takes over without waiting for its TTL."""
        with contextlib.suppress(PyMongoError):  # else it expires on its own
            self.store.leases.update_one(
                {"_id": self._doc_id(epoch), "holder": self.holder},
                {"$set": {"expires_at": dt.datetime(1970, 1, 1, tzinfo=dt.UTC)}},
            )

    def try_once_safely(self) -> bool:
        try:
            held = self.try_once()
        except PyMongoError as exc:
            # Keep nothing we cannot renew: held() turns False on its own at _valid_until.
            if not self._warned:
                log.warning("payments lease: MongoDB unavailable (%s)", type(exc).__name__)
                self._warned = True
            return False
        self._warned = False
        return held

    def standby_pause(self, floor: float) -> float:
        """Until the lease another holds expires (it renews before: we look again then)."""
        if self._seen_until is None:
            return floor
        until = (self._seen_until - utcnow()).total_seconds()
        return min(STANDBY_MAX_PAUSE_S, max(floor, until))

    def _run(self) -> None:
        renew_every = self.ttl_s / 3
        # A standby looks (two `_id` reads) when the lease it saw expires, within ~0.1 s of it.
        look_every = min(STANDBY_POLL_S, renew_every)
        next_housekeeping = time.monotonic()
        while not self.stopping:
            if (
                self.try_once_safely()
                and self.housekeeping
                and (time.monotonic() >= next_housekeeping)
            ):
                next_housekeeping = time.monotonic() + self.housekeeping_interval_s
                with contextlib.suppress(PyMongoError):  # next time
                    self.housekeeping()
            if self.held():
                # From when the last renewal was sent, not when it (or housekeeping) ended:
                # a slow store then eats less of the margin before the fence.
                self._pause(max(0.0, self._last_sent + renew_every - time.monotonic()))
            else:
                self._pause(self.standby_pause(look_every))

    def stop(self) -> None:
        super().stop()
        self.release()


class Leader:
    """This replica's leadership: whether it leads, and the lock of grant changes.

    Without a lease (a single process: tools and the tests' parts) it always leads.
    """

    def __init__(self, lease: PaymentsLease | None = None) -> None:
        self.lease = lease
        # Held by every change to grants and to Mosquitto's clients and roles, so that a
        # reconciliation never sees half of one (and FerretDB's findAndModify, not atomic,
        # never races another grant write in this process). Reentrant: changes nest.
        self.grants_lock = threading.RLock()

    def leads(self) -> bool:
        """True while this replica runs the once-cluster-wide roles (payment watcher, expiry,
        reconciliation, outbox) and may write grant roles to the broker."""
        return self.lease is None or self.lease.held()
