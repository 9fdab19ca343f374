"""When each device last sent a reading, read from the time-series store (Flux), for the
seller's device list. Best effort: a store that is down or refuses the token gives no times
(logged once), never an error of the listing. Cached briefly: the list may be polled."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from influxdb_client.client.influxdb_client import InfluxDBClient

log = logging.getLogger(__name__)

CACHE_S = 10.0
LOOKBACK = "-30d"


class LastReadings:
    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_s: float) -> None:
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=int(timeout_s * 1000))
        self._bucket = bucket
        self._lock = threading.Lock()
        self._cached: dict[str, dt.datetime] = {}
        self._cached_at = -CACHE_S
        self._warned = False

    def by_device(self) -> dict[str, dt.datetime]:
        with self._lock:
            if time.monotonic() - self._cached_at < CACHE_S:
                return self._cached
            try:
                self._cached = self._query()
                self._warned = False
            except Exception as exc:  # the list still answers, without times
                if not self._warned:
                    log.warning("last reading times unavailable: %s", type(exc).__name__)
                    self._warned = True
                self._cached = {}
            self._cached_at = time.monotonic()
            return self._cached

    def _query(self) -> dict[str, dt.datetime]:
        query = f"""from(bucket: "{self._bucket}")
  |> range(start: {LOOKBACK})
  |> filter(fn: (r) => r._measurement == "reading" and r._field == "value")
  |> group(columns: ["device"])
  |> last()
  |> keep(columns: ["device", "_time"])"""
        found: dict[str, dt.datetime] = {}
        for table in self._client.query_api().query(query):
            for record in table.records:
                device, at = record.values.get("device"), record.values.get("_time")
                if isinstance(device, str) and isinstance(at, dt.datetime):
                    found[device] = at
        return found

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
