"""Rebuild the moving-average windows from the store when their owner starts.

The owner (the single worker, or the averager behind N workers) keeps its windows in memory; at
start it reads back what the store holds for the series active in the last
INGEST_REBUILD_LOOKBACK_S: for each, the points inside its widest window, plus those held ahead
of the clock. Feeding them to `Averages` gives the state the owner had before it stopped (the
state does not depend on arrival order), so a restart does not reset the free averages. A series
idle for longer than the look-back starts afresh.

Reads with Flux (InfluxDB 2.x and 1.8+ with flux-enabled), as INFLUX_READ_TOKEN.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.rest import ApiException

from ingest.averages import Averages
from ingest.parsing import Reading, format_rfc3339
from ingest.settings import IngestSettings

log = logging.getLogger("ingest.rebuild")
# A store just started (the first `make run`) may refuse or not answer this long: said at INFO.
QUIET_START_S = 15.0


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def recent_readings(settings: IngestSettings, now: float | None = None) -> Iterator[Reading]:
    """The stored readings the windows need, series by series (raises on store errors)."""
    clock = time.time() if now is None else now
    widest = max(w.seconds for w in settings.windows)
    bucket = _string(settings.influx_bucket)
    stop = format_rfc3339(clock + settings.max_future_s + 1)
    token = (
        settings.influx_read_token.get_secret_value() or settings.influx_token.get_secret_value()
    )
    with InfluxDBClient(
        url=settings.influx_url,
        token=token,
        org=settings.influx_org,
        timeout=int(settings.store_timeout_s * 1000),
    ) as client:
        api = client.query_api()
        newest = api.query(
            f"from(bucket: {bucket})"
            f" |> range(start: {format_rfc3339(clock - settings.rebuild_lookback_s)}, stop: {stop})"
            ' |> filter(fn: (r) => r._measurement == "reading" and r._field == "value")'
            " |> last()"
        )
        for table in newest:
            for record in table.records:
                device, sensor = str(record["device"]), str(record["sensor"])
                last = record.get_time().timestamp()
                start = min(last, clock) - widest
                series = api.query(
                    f"from(bucket: {bucket})"
                    f" |> range(start: {format_rfc3339(start)}, stop: {stop})"
                    ' |> filter(fn: (r) => r._measurement == "reading" and r._field == "value"'
                    f" and r.device == {_string(device)} and r.sensor == {_string(sensor)})"
                )
                for t in series:
                    for point in t.records:
                        yield Reading(
                            device, sensor, float(point.get_value()), point.get_time().timestamp()
                        )


def _refused(exc: Exception) -> bool:
    """A token that may not read (2.x: 401/403; 1.x answers 500 saying READ is required)."""
    if not isinstance(exc, ApiException):
        return False
    reason = str(exc.headers.get("X-Influxdb-Error", "")) if exc.headers else ""
    return exc.status in (401, 403) or "requires READ" in reason


def rebuild_averages(averages: Averages, settings: IngestSettings, stop: threading.Event) -> None:
    """Refill the windows from the store; retried while the store is unreachable or refuses
    the token, for at most INGEST_REBUILD_TIMEOUT_S, then the averages start empty (said once,
    as an error)."""
    started = time.monotonic()
    delay = 0.5
    while not stop.is_set():
        try:
            count = 0
            now = time.time()
            for reading in recent_readings(settings, now):
                averages.add(reading, now)
                count += 1
        except Exception as exc:  # the store down, or a token that may not read
            brief = f"HTTP {exc.status}" if isinstance(exc, ApiException) else repr(exc)[:200]
            # A refusal is retried too: on a first start the store's users are still being
            # provisioned (there is nothing to rebuild then, and it is no error).
            if time.monotonic() - started > settings.rebuild_timeout_s:
                log.error(
                    "averages NOT rebuilt from the store (%s%s): they start from the next readings",
                    brief,
                    "; INFLUX_READ_TOKEN may not read the bucket" if _refused(exc) else "",
                )
                return
            # Quiet while a starting store may still be provisioning; louder after that.
            early = time.monotonic() - started < QUIET_START_S
            log.log(
                logging.INFO if early else logging.WARNING,
                "could not rebuild the averages from the store yet: %s; retrying",
                brief,
            )
            stop.wait(delay)
            delay = min(delay * 2, settings.retry_max_s)
            continue
        # Left marked as changed: published once more, in case the last changes of the process
        # before us were not (a retained message and a reading_avg point are overwritten).
        log.info(
            "averages rebuilt from the store: %d readings of %d series in %.2f s",
            count,
            len(averages),
            time.monotonic() - started,
        )
        return
