"""Several ingest workers on one shared subscription, with the averager as the one owner of the
averages: under load, SIGKILL a worker and the averager; nothing is lost or doubled in the store,
and the published averages are exactly what one owner computes over the same readings."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from ingest.averages import Averages
from ingest.parsing import Reading
from ingest.settings import parse_windows
from testing import procs
from testing.devices import Device
from tests.conftest import TEST_DEVICES, Store
from tests.ingest.conftest import (
    FAST_ENV,
    Subscriber,
    WorkerFactory,
    clear_session,
    ingest_averager,
    stored_points,
    unique,
)

SENSORS = 3  # on each of the 4 test devices: 12 series
PER_DEVICE = 240  # 2 Hz of device time: 120 s, wider than the widest window (1m)


def expected_averages(readings: list[Reading]) -> dict[str, tuple[float, int]]:
    """What one owner computes over the same readings (fed in one order, all at once)."""
    averages = Averages(parse_windows(FAST_ENV["INGEST_WINDOWS"]), 10_000, 20_000)
    averages.add_all(readings)
    return {
        f"avg/{u.window}/{u.device}/{u.sensor}": (u.value, u.count) for u in averages.take_updates()
    }


def published(port: int, topics: set[str]) -> dict[str, tuple[float, int]]:
    """The retained averages the broker holds now."""
    sub = Subscriber(port, "avg/#")
    try:
        procs.wait_until(lambda: topics <= {m.topic for m in sub.messages}, 10, "averages")
        latest = {m.topic: json.loads(m.payload) for m in sub.messages if m.topic in topics}
    finally:
        sub.close()
    return {t: (d["value"], d["count"]) for t, d in latest.items()}


def test_two_workers_one_killed_lose_nothing_and_averages_stay_exact(
    tmp_path: Path,
    mosquitto: procs.MosquittoHandle,
    influx: Store,
    start_worker: WorkerFactory,
    device_factory: Callable[[str], Device],
) -> None:
    group = unique("share").replace("-", "")
    sensors = [unique("so") for _ in range(SENSORS)]
    shared = {
        "INGEST_AVERAGES": "forward",
        "INGEST_SHARE_GROUP": group,
    }
    avg = ingest_averager(tmp_path, mosquitto, influx, unique("averager"))
    try:
        avg.proc.start()
        workers = [start_worker(influx, unique(f"w{i}"), **shared) for i in range(2)]
        devices = [device_factory(d) for d in TEST_DEVICES]
        series = [(device, sensor) for device in devices for sensor in sensors]
        base_ms = int(time.time() * 1000) - PER_DEVICE * 500 - 5_000  # all in the recent past
        readings: list[Reading] = []
        for i in range(PER_DEVICE):
            for d, (device, sensor) in enumerate(series):
                ts = base_ms + i * 500
                value = float((i * 7919 + d * 104729) % 1000) / 8
                device.publish(json.dumps({"value": value, "ts": ts}), sensor=sensor)
                readings.append(Reading(device.device_id, sensor, value, ts / 1000))
            if i == PER_DEVICE // 3:
                workers[1].proc.kill()  # mid-stream: its in-flight readings are not acked
            if i == PER_DEVICE // 3 + 20:
                workers[1].proc.start()  # as supervisord or compose restarts it
            if i == PER_DEVICE // 2:
                avg.proc.kill()  # the owner of the averages dies with batches acked
            if i == PER_DEVICE // 2 + 20:
                avg.proc.start()  # rebuilds its windows from the store
            time.sleep(0.004)
        for device in devices:
            device.flush()

        def all_stored() -> bool:
            return all(
                len(stored_points(influx, device.device_id, sensor)) >= PER_DEVICE
                for device, sensor in series
            )

        procs.wait_until(all_stored, 60, "every reading stored")
        for device, sensor in series:
            points = stored_points(influx, device.device_id, sensor)
            sent = [
                (round(r.ts * 1000), r.value)
                for r in readings
                if (r.device, r.sensor) == (device.device_id, sensor)
            ]
            assert sorted(points) == sorted(sent), "lost or extra points"
        counts = [w.metric("ingest_readings_stored_total") for w in workers]
        assert all(c > 0 for c in counts), f"the shared subscription did not spread: {counts}"

        want = expected_averages(readings)
        deadline = time.monotonic() + 20
        while True:
            got = published(mosquitto.port, set(want))
            wrong = {
                t: (got[t], want[t])
                for t in want
                if got[t][1] != want[t][1] or not math.isclose(got[t][0], want[t][0], rel_tol=1e-9)
            }
            if not wrong or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert not wrong, f"averages differ from one owner's: {list(wrong.items())[:3]}"
        assert "averages rebuilt from the store" in avg.proc.log_text()
    finally:
        avg.proc.stop()
        clear_session(mosquitto.port, mosquitto.ingest_password, avg.client_id)


def test_a_single_workers_averages_survive_its_restart(
    mosquitto: procs.MosquittoHandle,
    influx: Store,
    start_worker: WorkerFactory,
    device_factory: Callable[[str], Device],
) -> None:
    """The worker owns the averages (one worker): SIGKILL it, start it again; the next reading's
    average still counts the readings from before the crash (rebuilt from the store)."""
    worker = start_worker(influx)
    device = device_factory("dev-b")
    sensor = unique("restart")
    topic = f"avg/1m/dev-b/{sensor}"
    base_ms = int(time.time() * 1000) - 20_000
    for i in range(10):
        device.publish(json.dumps({"value": float(i), "ts": base_ms + i * 1000}), sensor=sensor)
    device.flush()
    procs.wait_until(lambda: len(stored_points(influx, "dev-b", sensor)) == 10, 20, "stored")
    sub = Subscriber(mosquitto.port, topic)
    procs.wait_until(
        lambda: any(json.loads(m.payload)["count"] == 10 for m in sub.messages), 10, "average"
    )
    sub.close()
    worker.proc.kill()
    worker.proc.start()
    device.publish(json.dumps({"value": 100.0, "ts": base_ms + 10_000}), sensor=sensor)
    device.flush()
    sub = Subscriber(mosquitto.port, topic)
    try:
        procs.wait_until(
            lambda: any(json.loads(m.payload)["count"] == 11 for m in sub.messages),
            15,
            "the average over 11 readings",
        )
        last = json.loads(sub.messages[-1].payload)
        assert last["value"] == (sum(range(10)) + 100.0) / 11
    finally:
        sub.close()
    assert "averages rebuilt from the store" in worker.proc.log_text()


def test_a_worker_stopped_cleanly_leaves_no_share_behind(
    mosquitto: procs.MosquittoHandle,
    influx: Store,
    start_worker: WorkerFactory,
    device_factory: Callable[[str], Device],
) -> None:
    """SIGTERM one of two workers (scaled down): it unsubscribes and drains first, so readings
    sent afterwards all reach the other one instead of piling up in the stopped one's session."""
    shared = {"INGEST_AVERAGES": "forward", "INGEST_SHARE_GROUP": unique("g").replace("-", "")}
    stays = start_worker(influx, unique("stays"), **shared)
    leaves = start_worker(influx, unique("leaves"), **shared)
    leaves.proc.stop()
    assert "disconnecting" in leaves.proc.log_text()
    device = device_factory("dev-c")
    sensor = unique("after")
    base_ms = int(time.time() * 1000) - 10_000
    for i in range(200):
        device.publish(json.dumps({"value": float(i), "ts": base_ms + i}), sensor=sensor)
    device.flush()
    procs.wait_until(
        lambda: len(stored_points(influx, "dev-c", sensor)) == 200, 20, "all stored by one worker"
    )
    assert stays.proc.running()
