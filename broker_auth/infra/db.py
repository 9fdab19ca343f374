"""MongoDB access: the collections of the source of truth and their indexes.

Only what both MongoDB and FerretDB 1.24 support is used: CRUD, (unique) indexes and
find_one_and_update. No transactions, change streams or TTL indexes: where two writes must
agree, the second one is idempotent and keyed by the first (see grants.py).

Natural keys are the `_id`s (username, device id, product id, order id, `<user>/<product>`
for grants), so they are unique by construction; the other unique keys have indexes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pymongo
from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import ConnectionFailure, PyMongoError

from broker_auth.infra.store_metrics import StoreCommandTimer

log = logging.getLogger(__name__)

Doc = dict[str, Any]

# The first start-up attempt's deadline (doubled after each failed one, up to the max: also
# how long a stop may wait while the store does not answer).
STARTUP_ATTEMPT_S = 30.0
STARTUP_ATTEMPT_MAX_S = 120.0


def transient(exc: PyMongoError) -> bool:
    """A store that does not answer (yet, or in time), as opposed to one that says no."""
    return isinstance(exc, ConnectionFailure) or exc.timeout


class Store:
    def __init__(self, url: str, database: str, timeout_s: float = 2.0) -> None:
        ms = int(timeout_s * 1000)
        self.client: MongoClient[Doc] = MongoClient(
            url,
            tz_aware=True,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=max(ms * 3, 5000),
            appname="broker_auth",
            event_listeners=[StoreCommandTimer()],
        )
        self.db = self.client[database]
        self.accounts: Collection[Doc] = self.db["accounts"]
        self.devices: Collection[Doc] = self.db["devices"]
        self.products: Collection[Doc] = self.db["products"]
        self.orders: Collection[Doc] = self.db["orders"]
        self.payments: Collection[Doc] = self.db["payments"]
        self.grants: Collection[Doc] = self.db["grants"]
        self.deposit_addresses: Collection[Doc] = self.db["deposit_addresses"]
        # The addresses being watched, and nothing else: the watcher scans it every poll, so its
        # size is the watched orders' (FerretDB scans a whole collection for any query but an
        # `_id` equality, whatever the indexes). See billing/pool.py.
        self.watchlist: Collection[Doc] = self.db["watchlist"]
        # A buyer's places for unpaid orders (unpaid.py): `<username>#<n>`, by `_id` only.
        self.order_slots: Collection[Doc] = self.db["order_slots"]
        self.sessions: Collection[Doc] = self.db["sessions"]  # `_id`: SHA-256 of the token
        # Provisional access, one entry per admitted bundle (access/provisional.py): the
        # entries still running, read whole by every instant-access review; ended ones move to
        # `provisional_ended`, so the reads cost what runs, not every bundle ever admitted.
        self.provisional: Collection[Doc] = self.db["provisional"]
        self.provisional_ended: Collection[Doc] = self.db["provisional_ended"]
        # Buyers' cancels handed to the payment watcher, and who acted on each (cancels.py).
        self.cancel_requests: Collection[Doc] = self.db["cancel_requests"]
        self.cancel_decisions: Collection[Doc] = self.db["cancel_decisions"]
        # Payers and inputs that double-spent: no instant access for a while (by `_id` only).
        self.instant_blocks: Collection[Doc] = self.db["instant_blocks"]
        # Confirmed payments not yet in the time-series store (small: drained every second).
        self.outbox: Collection[Doc] = self.db["outbox"]
        # Shared by the replicas: login/sign-up limits (accounts/throttle.py), the lease
        # (infra/leader.py).
        self.throttles: Collection[Doc] = self.db["throttles"]
        self.leases: Collection[Doc] = self.db["leases"]

    def migrate(self) -> None:
        """Data of the single-address era: orders then shared one address (kept apart now)."""
        if "payment_key_unique" in self.payments.index_information():
            self.payments.drop_index("payment_key_unique")
        self.orders.update_many(
            {"watch_until": {"$exists": False}, "address": {"$exists": True}},
            {"$rename": {"address": "legacy_address"}},
        )

    def ensure_indexes(self) -> None:
        self.migrate()
        self.orders.create_index([("tag", ASCENDING)], unique=True, name="order_tag_unique")
        self.orders.create_index([("username", ASCENDING)], name="order_username")
        # One order per deposit address, ever: what makes handing out an address atomic.
        self.orders.create_index([("address", ASCENDING)], unique=True, name="order_address_unique")
        self.deposit_addresses.create_index(
            [("state", ASCENDING), ("added_at", ASCENDING)], name="deposit_address_state"
        )
        self.deposit_addresses.create_index(
            [("state", ASCENDING), ("queued_at", ASCENDING)], name="deposit_address_queue"
        )
        self.payments.create_index([("order_id", ASCENDING)], name="payment_order")
        self.payments.create_index([("address", ASCENDING)], name="payment_address")
        self.payments.create_index([("credited", ASCENDING)], name="payment_credited")
        self.grants.create_index(
            [("active", ASCENDING), ("expires_at", ASCENDING)], name="grant_active_expiry"
        )
        self.grants.create_index([("username", ASCENDING)], name="grant_username")
        self.sessions.create_index([("username", ASCENDING)], name="session_username")

    def wait_ready(self, then: Callable[[], object] = lambda: None) -> None:
        """Wait for the database at start-up, then run `then` (the start-up's migrations and
        reads), again until the store takes both.

        The store may start after us (supervisord), or be too loaded to answer within the
        usual socket timeout (a replica restarted while its peers keep it busy): each attempt
        gets twice the time of the last, up to STARTUP_ATTEMPT_MAX_S, and the service does not
        exit for it, since a restart would only begin the same reads again. An error that
        waiting cannot cure (refused credentials, a conflicting index) is raised at once.
        """
        budget = STARTUP_ATTEMPT_S
        while True:
            began = time.monotonic()
            try:
                with pymongo.timeout(budget):
                    self.ping()
                    self.ensure_indexes()
                    then()
                return
            except PyMongoError as exc:
                if not transient(exc):
                    raise
                budget = min(budget * 2, STARTUP_ATTEMPT_MAX_S)
                log.warning(
                    "MongoDB did not take the start-up in %.0f s (%s: %s); again with %.0f s",
                    time.monotonic() - began,
                    type(exc).__name__,
                    str(exc)[:200],
                    budget,
                )
                time.sleep(1.0)

    def ping(self) -> bool:
        self.client.admin.command("ping")
        return True

    def close(self) -> None:
        self.client.close()
