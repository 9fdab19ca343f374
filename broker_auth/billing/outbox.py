"""Confirmed payments to the time-series store through a durable outbox in MongoDB.

What Grafana's revenue panel sums must be what the payment records say, across crashes of
broker_auth and of the store. So a confirmed payment's point is not an in-memory event: it is a
document of the `outbox` collection, upserted under the payment's own id right after the
payment is recorded (and again whenever the watcher finds the payment recorded before a crash,
so a crash between the two writes loses nothing). A drainer writes the outbox to InfluxDB in
batches and deletes what the store accepted; a crash in between writes it again.

Writing twice is harmless: each point is stamped with the payment's `confirmed_at` plus a
nanosecond offset derived from the payment id, so the same payment is always the same point
(InfluxDB overwrites it) and two payments of one product in one millisecond stay two points.
"""

from __future__ import annotations

import hashlib
import logging

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS

from broker_auth.infra import metrics
from broker_auth.infra.background import BackgroundWorker
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.infra.events import escape_tag
from broker_auth.infra.leader import Leader

log = logging.getLogger(__name__)

BATCH = 500
INTERVAL_S = 1.0
MAX_BACKOFF_S = 10.0


def payment_point(payment: Doc) -> str:
    """The payment's `payment` point (status confirmed), the same every time it is built."""
    product = str(payment.get("product_id") or "unmatched")
    at = as_utc(payment["confirmed_at"])
    ms = int(at.timestamp() * 1000)
    offset = int(hashlib.sha256(str(payment["_id"]).encode()).hexdigest()[:8], 16) % 1_000_000
    stamp = ms * 1_000_000 + offset  # nanoseconds
    return (
        f"payment,product={escape_tag(product)},status=confirmed "
        f"amount_iota={int(payment['amount_iota'])}i {stamp}"
    )


class Outbox:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add_payment(self, payment: Doc) -> None:
        """Idempotent: one outbox entry per payment until the store has it."""
        self.store.outbox.update_one(
            {"_id": f"payment:{payment['_id']}"},
            {"$setOnInsert": {"line": payment_point(payment), "created_at": utcnow()}},
            upsert=True,
        )

    def pending(self, limit: int = BATCH) -> list[Doc]:
        return list(self.store.outbox.find({}, {"line": 1}).limit(limit))

    def delivered(self, ids: list[str]) -> None:
        self.store.outbox.delete_many({"_id": {"$in": ids}})


class OutboxDrainer(BackgroundWorker):
    def __init__(
        self,
        outbox: Outbox,
        url: str,
        token: str,
        org: str,
        bucket: str,
        timeout_s: float = 5.0,
        leader: Leader | None = None,
    ) -> None:
        super().__init__("outbox")
        self.outbox = outbox
        self.leader = leader or Leader()  # drained by the leader only
        self.bucket, self.org = bucket, org
        self._client = InfluxDBClient(
            url=url, token=token or "unused", org=org, timeout=int(timeout_s * 1000)
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._failing = False

    def drain_once(self) -> int:
        """Write what is waiting; returns how many points the store accepted."""
        written = 0
        while True:
            docs = self.outbox.pending()
            if not docs:
                return written
            self._write.write(bucket=self.bucket, org=self.org, record=[d["line"] for d in docs])
            self.outbox.delivered([str(d["_id"]) for d in docs])
            written += len(docs)
            metrics.OUTBOX_WRITTEN.inc(len(docs))

    def _run(self) -> None:
        wait = INTERVAL_S
        while not self._pause(wait):
            if not self.leader.leads():
                continue
            try:
                self.drain_once()
            except Exception as exc:  # store or MongoDB down: everything stays in the outbox
                if not self._failing:
                    log.warning("outbox: cannot deliver yet (%s); retrying", type(exc).__name__)
                self._failing = True
                wait = min(wait * 2, MAX_BACKOFF_S)
                continue
            if self._failing:
                log.info("outbox: delivering again")
            self._failing = False
            wait = INTERVAL_S
        try:  # a last pass on a clean stop
            self.drain_once()
        except Exception:
            log.info("outbox: undelivered points stay in MongoDB for the next start")

    def stop(self) -> None:
        super().stop()
        self._client.close()  # type: ignore[no-untyped-call]
