"""IngestStoreFailing live: Debian's Prometheus scrapes a real ingest worker and evaluates
prometheus/alerts.yml; InfluxDB is stopped under a stream of readings and the alert fires, then
resolves once InfluxDB is back, with every reading stored (promtool's unit tests,
tests/test_alert_rules.py, cover the rule's timing on synthetic series).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testing import procs
from testing.devices import Device
from testing.procs import wait_for
from testing.prometheus import start_prometheus
from tests.ingest.conftest import WorkerFactory, unique
from tests.ingest.test_resilience import Stream, wait_all_stored

pytestmark = pytest.mark.timeout(600)
ALERT = "IngestStoreFailing"


def test_ingest_store_failing_fires_when_influxdb_stops(
    tmp_path: Path, start_worker: WorkerFactory, device_factory: Callable[[str], Device]
) -> None:
    store = procs.influx(tmp_path / "influxdb")
    prometheus = None
    try:
        worker = start_worker(store)
        sensor = unique("alert")
        stream = Stream(device_factory("dev-d"), sensor, rate_hz=20).start()
        wait_for(lambda: worker.metric("ingest_readings_stored_total") >= 20, 20, "stored", 0.2)
        prometheus = start_prometheus(
            tmp_path / "prometheus", {"ingest": f"http://127.0.0.1:{worker.metrics_port}"}
        )
        time.sleep(5)
        assert ALERT not in prometheus.alerts()  # storing: quiet
        stopped = time.monotonic()
        store.proc.stop()
        wait_for(lambda: prometheus.alerts().get(ALERT) == "firing", 300, f"{ALERT} firing", 2)
        fired_after = time.monotonic() - stopped
        assert 60 < fired_after < 300, fired_after  # not on a blip; within the rule's 2 m + 1 m
        store.proc.start()  # same port and data
        wait_for(lambda: ALERT not in prometheus.alerts(), 60, f"{ALERT} resolved", 1)
        sent = stream.stop()
        wait_all_stored(store, "dev-d", sensor, sent)  # the outage lost nothing
        worker.proc.stop()  # before the store, so its shutdown flush finds it up
    finally:
        if prometheus is not None:
            prometheus.proc.stop()
        store.proc.stop()
