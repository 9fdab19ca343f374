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
from typing import Any

from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

Doc = dict[str, Any]


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
        # Provisional access, one entry per admitted bundle (access/provisional.py).
        self.provisional: Collection[Doc] = self.db["provisional"]
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

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for the database at start-up (it may start after us under supervisord)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.ping()
                self.ensure_indexes()
                return
            except PyMongoError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("MongoDB not ready yet (%s); retrying", type(exc).__name__)
                time.sleep(1.0)

    def ping(self) -> bool:
        self.client.admin.command("ping")
        return True

    def close(self) -> None:
        self.client.close()
