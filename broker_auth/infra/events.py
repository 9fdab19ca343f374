"""Business events to InfluxDB: payments seen unconfirmed, grants, active grants.

(Confirmed payments, what the revenue panel sums, go through the durable outbox instead:
broker_auth/billing/outbox.py.) Best effort by design: callers only append to a bounded in-memory
buffer, a background thread writes batches, and when the store is down the oldest points are
dropped first (counted in /metrics). The API never waits for the time-series store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS

from broker_auth.infra import metrics
from broker_auth.infra.background import BackgroundWorker

log = logging.getLogger(__name__)

BATCH = 500


def escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def line(measurement: str, tags: dict[str, str], fields: dict[str, int | float]) -> str:
    """One point in InfluxDB line protocol, stamped now (to the millisecond)."""
    tag_text = "".join(f",{k}={escape_tag(v)}" for k, v in sorted(tags.items()))
    field_text = ",".join(
        f"{k}={v}i" if isinstance(v, int) else f"{k}={float(v)!r}" for k, v in fields.items()
    )
    stamp = time.time_ns() // 1_000_000 * 1_000_000  # nanoseconds (the default precision)
    return f"{measurement}{tag_text} {field_text} {stamp}"


class EventWriter(BackgroundWorker):
    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        capacity: int = 10_000,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__("events")
        self.bucket = bucket
        self.org = org
        self._buffer: deque[str] = deque()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._client = InfluxDBClient(
            url=url, token=token or "unused", org=org, timeout=int(timeout_s * 1000)
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._failing = False

    # -- producers (any thread, never blocks) --------------------------------------------
    def _put(self, point: str) -> None:
        with self._lock:
            if len(self._buffer) >= self._capacity:
                self._buffer.popleft()
                metrics.EVENTS_DROPPED.inc()
            self._buffer.append(point)
        self.wake()

    def payment(self, product: str, status: str, amount_iota: int) -> None:
        self._put(
            line(
                "payment",
                {"product": product or "unmatched", "status": status},
                {"amount_iota": int(amount_iota)},
            )
        )

    def grant(self, product: str, event: str, seconds: float) -> None:
        self._put(line("grant", {"product": product, "event": event}, {"seconds": float(seconds)}))

    def grants_active(self, counts: dict[str, int]) -> None:
        for product, count in counts.items():
            self._put(line("grants_active", {"product": product}, {"count": int(count)}))

    # -- writer thread -------------------------------------------------------------------
    def stop(self) -> None:
        super().stop()
        self._client.close()  # type: ignore[no-untyped-call]

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def _run(self) -> None:
        backoff = 0.5
        while True:
            stopping = self._pause(1.0)
            while True:
                with self._lock:
                    batch = [self._buffer[i] for i in range(min(BATCH, len(self._buffer)))]
                if not batch:
                    break
                try:
                    self._write.write(
                        bucket=self.bucket,
                        org=self.org,
                        record=batch,
                    )
                except Exception as exc:  # any transport error: keep the points, retry later
                    if not self._failing:
                        log.warning("time-series store unavailable (%s); buffering events", exc)
                    self._failing = True
                    if self._stop.wait(backoff):  # not woken by new points: keep backing off
                        return
                    backoff = min(backoff * 2, 10.0)
                    continue
                if self._failing:
                    log.info("time-series store reachable again")
                self._failing = False
                backoff = 0.5
                with self._lock:
                    # The buffer may have dropped old points meanwhile; remove only ours.
                    for point in batch:
                        if self._buffer and self._buffer[0] is point:
                            self._buffer.popleft()
                metrics.EVENTS_WRITTEN.inc(len(batch))
            if stopping:
                return
