"""Write readings and averages to InfluxDB (or VictoriaMetrics' InfluxDB v2 write API).

Line protocol is built here (no Point objects: they cost more than the rest of the pipeline) and
sent with influxdb-client's synchronous write API, so the caller knows exactly when a batch has
been accepted. Timestamps are written with millisecond precision throughout.

Failures:
- transient (connection refused/reset, timeouts, 429, 5xx, and 401/403/404 which are operator
  errors that get fixed): retried with exponential backoff for as long as it takes, or until the
  shutdown deadline. Back-pressure comes from the caller not acknowledging meanwhile.
- permanent for the points (400, 413, 422): the batch is split in halves until the bad point is
  alone; that point is logged, counted and dropped so it cannot block the pipeline.

Replay after an outage: a store may acknowledge a write and still lose it when it crashes soon
after (VictoriaMetrics 1.79 keeps about 10 s of accepted samples in memory only; a SIGKILL loses
them). Readings are acknowledged to the broker once written, so nobody else could re-send them.
We therefore keep the batches accepted in the last INGEST_REPLAY_WINDOW_S (bounded by
INGEST_REPLAY_MAX_POINTS) and write them again when the store comes back after failed writes.
Rewriting is harmless: the same series, time and value (InfluxDB overwrites the point).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import cast

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from ingest import metrics
from ingest.averages import AverageUpdate
from ingest.parsing import Reading
from ingest.ratelog import RateLimitedLog
from ingest.settings import IngestSettings

log = logging.getLogger("ingest.store")

_PRECISION = cast(WritePrecision, WritePrecision.MS)  # a str constant typed as the enum

PERMANENT_STATUSES = frozenset({400, 413, 422})
_TAG_ESCAPES = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\"})


class StoreUnavailableError(Exception):
    """The store could not be written before the shutdown deadline."""


def escape_tag(value: str) -> str:
    return value.translate(_TAG_ESCAPES)


def ts_ms(ts: float) -> int:
    return round(ts * 1000)


def reading_line(r: Reading) -> str:
    return (
        f"reading,device={escape_tag(r.device)},sensor={escape_tag(r.sensor)} "
        f"value={r.value!r} {ts_ms(r.ts)}"
    )


def average_line(a: AverageUpdate) -> str:
    return (
        f"reading_avg,device={escape_tag(a.device)},sensor={escape_tag(a.sensor)},"
        f"window={escape_tag(a.window)} value={a.value!r},count={a.count}i {ts_ms(a.ts)}"
    )


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, ApiException) and exc.status in PERMANENT_STATUSES


class InfluxStore:
    def __init__(self, settings: IngestSettings) -> None:
        self.bucket = settings.influx_bucket
        self.org = settings.influx_org
        self.retry_max_s = settings.retry_max_s
        self._client = InfluxDBClient(
            url=settings.influx_url,
            token=settings.influx_token.get_secret_value(),
            org=settings.influx_org,
            timeout=int(settings.store_timeout_s * 1000),
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._errors = RateLimitedLog(log, 10.0)
        # Set by `give_up_at` on shutdown: retries stop after this monotonic time.
        self.deadline: float | None = None
        self.replay_window_s = settings.replay_window_s
        self.replay_max_points = settings.replay_max_points
        self._recent: deque[tuple[float, str, int]] = deque()  # (accepted at, body, points)
        self._recent_points = 0
        self._outage = False  # a write failed since the last successful one

    def give_up_at(self, deadline: float) -> None:
        self.deadline = deadline

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def write(self, lines: Sequence[str]) -> int:
        """Write until accepted; returns how many points were dropped as permanently invalid.

        Raises StoreUnavailableError once past the shutdown deadline.
        """
        if not lines:
            return 0
        try:
            self._write_retrying(lines)
            return 0
        except ApiException as exc:
            if not is_permanent(exc):
                raise  # pragma: no cover - transient ones end in StoreUnavailableError
            if len(lines) == 1:
                metrics.STORE_DROPPED.inc()
                log.error(
                    "store refused a point (HTTP %s), dropped: %s: %s",
                    exc.status,
                    lines[0][:200],
                    str(exc.body)[:200],
                )
                return 1
            half = len(lines) // 2
            return self.write(lines[:half]) + self.write(lines[half:])

    def _write_retrying(self, lines: Sequence[str]) -> None:
        body = "\n".join(lines)
        self._send(body, len(lines))
        while self._outage:
            self._outage = False
            self._replay()
        self._remember(body, len(lines))

    def _remember(self, body: str, points: int) -> None:
        if self.replay_window_s <= 0:
            return
        now = time.monotonic()
        self._recent.append((now, body, points))
        self._recent_points += points
        while self._recent and (
            now - self._recent[0][0] > self.replay_window_s
            or self._recent_points > self.replay_max_points
        ):
            self._recent_points -= self._recent.popleft()[2]

    def _replay(self) -> None:
        """Re-write what the store accepted shortly before the outage (it may have lost it)."""
        if not self._recent:
            return
        log.warning(
            "store is back: re-writing the %d points it accepted in the %.0f s before the outage",
            self._recent_points,
            self.replay_window_s,
        )
        for _, body, points in list(self._recent):
            try:
                self._send(body, points)
            except ApiException as exc:  # accepted once, refused now: keep going
                log.error("store refused a replayed batch (HTTP %s)", exc.status)
            else:
                metrics.STORE_REPLAYED.inc(points)

    def _send(self, body: str, points: int) -> None:
        """One body, retried while the failure is transient (or until the shutdown deadline)."""
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: not is_permanent(exc)),
            wait=wait_exponential_jitter(initial=0.05, max=self.retry_max_s),
            stop=self._past_deadline,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            retrying(self._write_once, body, points)
        except ApiException as exc:
            if is_permanent(exc):
                raise
            raise StoreUnavailableError(str(exc)) from exc
        except Exception as exc:
            raise StoreUnavailableError(str(exc)) from exc

    def _past_deadline(self, _state: RetryCallState) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _log_retry(self, state: RetryCallState) -> None:
        self._outage = True
        metrics.STORE_ERRORS.inc()
        exc = state.outcome.exception() if state.outcome else None
        self._errors.warning(
            "store",
            "store write failed (attempt %d, retrying): %s",
            state.attempt_number,
            _describe(exc),
        )

    def _write_once(self, body: str, points: int) -> None:
        started = time.perf_counter()
        self._write_api.write(
            bucket=self.bucket, org=self.org, record=body, write_precision=_PRECISION
        )
        metrics.STORE_WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.STORE_BATCH_POINTS.observe(points)


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"[:300]
