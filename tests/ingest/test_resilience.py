"""Nothing accepted is lost: store crash, worker crash, graceful stop, back-pressure."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from testing import procs
from testing.devices import Device
from testing.procs import wait_for
from tests.conftest import Store
from tests.ingest.conftest import Worker, WorkerFactory, stored_points, unique


class Stream:
    """Publish readings with distinct timestamps at a steady rate from a background thread."""

    def __init__(self, device: Device, sensor: str, rate_hz: float) -> None:
        self.device = device
        self.sensor = sensor
        self.period = 1.0 / rate_hz
        self.sent: list[int] = []  # timestamps in ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._base_ms = int(time.time() * 1000) - 60_000

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            ts_ms = self._base_ms + i
            self.device.publish(json.dumps({"value": i, "ts": ts_ms}), sensor=self.sensor)
            self.sent.append(ts_ms)
            i += 1
            self._stop.wait(self.period)

    def wait_sent(self, n: int, timeout: float = 20) -> None:
        wait_for(lambda: len(self.sent) >= n, timeout, f"{n} readings sent", 0.2)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(5)
        self.device.flush()
        return self.sent


def stored_ts(store: Store, device: str, sensor: str) -> set[int]:
    return {ts for ts, _ in stored_points(store, device, sensor)}


def wait_all_stored(store: Store, device: str, sensor: str, sent: list[int]) -> None:
    wait_for(
        lambda: stored_ts(store, device, sensor) >= set(sent),
        30,
        f"all {len(sent)} stored",
        0.2,
    )
    assert stored_ts(store, device, sensor) == set(sent)


def test_no_loss_when_the_store_is_killed_and_restarted(
    tmp_path: Path, start_worker: WorkerFactory, device_factory: Callable[[str], Device]
) -> None:
    store = procs.influx(tmp_path / "influxdb")
    try:
        # A small Receive Maximum shows the back-pressure: the buffer stops at it.
        worker = start_worker(store, INGEST_RECEIVE_MAXIMUM="60", INGEST_BATCH_SIZE="20")
        sensor = unique("storekill")
        stream = Stream(device_factory("dev-d"), sensor, rate_hz=100).start()
        stream.wait_sent(100)
        wait_for(lambda: worker.metric("ingest_readings_stored_total") >= 50, 10, "stored", 0.2)
        store.proc.kill()  # SIGKILL mid-stream: what it answered is in its fsynced WAL
        time.sleep(0.3)  # let a write answered just before the kill be counted
        stored_at_kill = worker.metric("ingest_readings_stored_total")
        depths = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            depths.append(worker.metric("ingest_buffer_depth"))
            time.sleep(0.1)
        # Nothing acknowledged while the store is down; the broker holds the rest.
        assert worker.metric("ingest_readings_stored_total") == stored_at_kill
        assert max(depths) == 60
        assert worker.metric("ingest_store_errors_total") > 0
        store.proc.start()  # same port, same data directory
        stream.wait_sent(len(stream.sent) + 100)
        sent = stream.stop()
        wait_all_stored(store, "dev-d", sensor, sent)
        assert worker.proc.running()
        worker.proc.stop()  # before the store, so its shutdown flush finds it up
    finally:
        store.proc.stop()


def test_no_loss_when_the_worker_is_killed_and_restarted(
    influx: Store, start_worker: WorkerFactory, device_factory: Callable[[str], Device]
) -> None:
    worker = start_worker(influx)
    sensor = unique("workerkill")
    stream = Stream(device_factory("dev-d"), sensor, rate_hz=100).start()
    stream.wait_sent(100)
    worker.proc.kill()  # SIGKILL: whatever it held unacknowledged stays with the broker
    stream.wait_sent(len(stream.sent) + 100)  # published while no worker runs
    worker.proc.start()  # same client id: resumes the persistent session
    stream.wait_sent(len(stream.sent) + 50)
    sent = stream.stop()
    wait_all_stored(influx, "dev-d", sensor, sent)


def test_sigterm_flushes_and_acknowledges_before_leaving(
    influx: Store, start_worker: WorkerFactory, device_factory: Callable[[str], Device]
) -> None:
    # Long flush interval and big batches: only the shutdown flush can write these.
    env = {
        "INGEST_FLUSH_INTERVAL_S": "60",
        "INGEST_BATCH_SIZE": "500",
        "INGEST_PUBLISH_INTERVAL_S": "60",
    }
    worker: Worker = start_worker(influx, **env)
    dev = device_factory("dev-a")
    sensor = unique("sigterm")
    base = int(time.time() * 1000) - 5000
    for i in range(40):
        dev.publish(json.dumps({"value": i, "ts": base + i}), sensor=sensor)
    dev.flush()
    wait_for(lambda: worker.metric("ingest_buffer_depth") == 40, 10, "40 readings buffered", 0.2)
    assert not stored_ts(influx, "dev-a", sensor)
    worker.proc.signal(signal.SIGTERM)
    assert worker.proc.popen is not None
    assert worker.proc.popen.wait(15) == 0
    assert stored_ts(influx, "dev-a", sensor) == {base + i for i in range(40)}
    # Everything was acknowledged: the session holds nothing to redeliver.
    worker.proc.start()
    time.sleep(0.5)
    assert worker.metric("ingest_readings_received_total") == 0
