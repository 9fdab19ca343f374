"""Write readings and averages to InfluxDB (its v2 write API: InfluxDB 2.x, or 1.8+ locally).

Line protocol is built here (no Point objects: they cost more than the rest of the pipeline) and
sent with influxdb-client's synchronous write API, so the caller knows exactly when a batch has
been accepted. Timestamps are written with millisecond precision throughout.

Failures:
- transient (connection refused/reset, timeouts, 429, 5xx, and 401/403/404 which are operator
  errors that get fixed): retried with exponential backoff for as long as it takes, or until the
  shutdown deadline. Back-pressure comes from the caller not acknowledging meanwhile.
- permanent for the points (400, 413, 422): the batch is split in halves until the bad point is
  alone; that point is logged, counted and dropped so it cannot block the pipeline.

No replay after an outage: the store answers a write only once it is durable (InfluxDB fsyncs
its WAL first; `make bench` store_kill: 0 of 870,700 acknowledged points lost over 20 SIGKILLs),
and readings are acknowledged to the broker only after that answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import cast

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from ingest import metrics
from ingest.averages import AverageUpdate
from ingest.parsing import Reading, ts_ms
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


def reading_line_prefix(device: str, sensor: str) -> str:
    """What the lines of one series start with (the worker caches it per series)."""
    return f"reading,device={escape_tag(device)},sensor={escape_tag(sensor)} value="


def reading_line(r: Reading) -> str:
    return f"{reading_line_prefix(r.device, r.sensor)}{r.value!r} {ts_ms(r.ts)}"


def parse_reading_line(line: str) -> Reading:
    """The reverse of `reading_line` (device and sensor names never need escaping: the parser
    allows only letters, digits, `_`, `.` and `-`). Raises ValueError for anything else."""
    head, field, stamp = line.split(" ")
    measurement, device, sensor = head.split(",")
    if (
        measurement != "reading"
        or not device.startswith("device=")
        or not sensor.startswith("sensor=")
        or not field.startswith("value=")
    ):
        raise ValueError(f"not a reading line: {line[:100]!r}")
    return Reading(device[7:], sensor[7:], float(field[6:]), int(stamp) / 1000)


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

    def give_up_at(self, deadline: float) -> None:
        self.deadline = deadline

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def write(self, lines: Sequence[str]) -> list[str]:
        """Write until accepted; returns the lines dropped as permanently invalid.

        Raises StoreUnavailableError once past the shutdown deadline.
        """
        if not lines:
            return []
        try:
            self._write_retrying(lines)
            return []
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
                return [lines[0]]
            half = len(lines) // 2
            return self.write(lines[:half]) + self.write(lines[half:])

    def _write_retrying(self, lines: Sequence[str]) -> None:
        self._send("\n".join(lines), len(lines))

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
