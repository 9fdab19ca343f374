"""The ingest worker as a real process between Mosquitto and InfluxDB."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

import pytest

from ingest import parsing
from testing import procs
from testing.devices import Device
from testing.procs import wait_for
from tests.conftest import Store
from tests.ingest.conftest import Subscriber, Worker, stored_points, unique


def wait_stored(
    influx: Store, device: str, sensor: str, n: int, worker: Worker
) -> list[tuple[int, float]]:
    try:
        wait_for(
            lambda: len(stored_points(influx, device, sensor)) >= n, 15, f"{n} of {sensor}", 0.2
        )
    except AssertionError as exc:
        found = stored_points(influx, device, sensor)
        raise AssertionError(
            f"{exc}: found {found}\nmetrics: {worker.metrics()}\nlog:\n{worker.proc.tail()}"
        ) from None
    return stored_points(influx, device, sensor)


def test_payload_and_timestamp_forms(
    worker: Worker, influx: Store, device_factory: Callable[[str], Device]
) -> None:
    dev = device_factory("dev-a")
    sensor = unique("forms")
    base = int(time.time()) - 3600  # an hour late: stored all the same
    before_ms = int(time.time() * 1000)
    dev.publish("1234.5", sensor=sensor)  # bare number, arrival time
    dev.publish(json.dumps({"value": 2, "unit": "W"}), sensor=sensor)  # JSON, arrival time
    for extra in ("11", "12", "13"):  # a burst: same millisecond or not, each keeps its own
        dev.publish(extra, sensor=sensor)
    dev.flush()
    dev.publish(json.dumps({"value": 3.25, "ts": base + 0.125}), sensor=sensor)  # epoch s, float
    dev.publish(json.dumps({"value": 4, "ts": base + 10}), sensor=sensor)  # epoch s, int
    dev.publish(json.dumps({"value": 5, "ts": (base + 20) * 1000 + 7}), sensor=sensor)  # epoch ms
    dev.publish(json.dumps({"value": 6, "ts": "2024-05-01T12:00:00.250Z"}), sensor=sensor)
    dev.publish(json.dumps({"value": 7, "ts": "2024-05-01T14:00:01+02:00"}), sensor=sensor)
    dev.flush()
    samples = wait_stored(influx, "dev-a", sensor, 10, worker)
    stored_ms = int(time.time() * 1000)
    by_value = {v: ts for ts, v in samples}
    assert set(by_value) == {1234.5, 2, 11, 12, 13, 3.25, 4, 5, 6, 7}
    arrival_stamped = [by_value[v] for v in (1234.5, 2, 11, 12, 13)]
    assert arrival_stamped == sorted(set(arrival_stamped))  # in arrival order, distinct
    # Stamped on the worker's arrival: after publishing began, before the store had them. (The
    # broker's PUBACK to the device can precede the worker's copy on a busy machine, so the end
    # of the device's flush is no upper bound.)
    assert before_ms <= arrival_stamped[0] and arrival_stamped[-1] <= stored_ms
    assert by_value[3.25] == base * 1000 + 125
    assert by_value[4] == (base + 10) * 1000
    assert by_value[5] == (base + 20) * 1000 + 7
    assert by_value[6] == 1714564800250
    assert by_value[7] == 1714564801000


def reference(points: list[tuple[float, float]], window: float) -> tuple[float, int]:
    newest = max(ts for ts, _ in points)
    inside = [v for ts, v in points if newest - window < ts <= newest]
    return math.fsum(inside) / len(inside), len(inside)


def retained(port: int, topic: str) -> dict[str, object] | None:
    """What a subscriber arriving now gets on `topic` (the retained message), if anything."""
    sub = Subscriber(port, topic)
    try:
        deadline = time.monotonic() + 1.0
        while not sub.messages and time.monotonic() < deadline:
            time.sleep(0.02)
        # A publication racing with our subscription arrives live (retain flag off): skip it.
        kept = [m for m in sub.messages if m.retain]
        if not kept:
            return None
        doc: dict[str, object] = json.loads(kept[0].payload)
        return doc
    finally:
        sub.close()


def test_moving_averages_match_reference_and_are_retained(
    worker: Worker,
    influx: Store,
    mosquitto: procs.MosquittoHandle,
    device_factory: Callable[[str], Device],
) -> None:
    dev = device_factory("dev-b")
    sensor = unique("avg")
    base = float(int(time.time()) - 600)
    points = [(base + t, float(v)) for t, v in [(0, 10), (10, 20), (20, 30), (35, 40), (50, 50)]]
    points += [
        (base + 45, 1000.0),  # out of order, inside both windows
        (base + 15, 7.0),  # out of order, inside 1m only
        (base + 100, 60.0),  # in order, evicts everything up to base + 40 from 1m
        (base + 40, 99.0),  # exactly newest - 60: on the open edge, outside 1m
        (base + 40.5, 5.0),  # just inside 1m
        (base + 70, 8.0),  # exactly newest - 30: outside 30s, inside 1m
        (base + 5, 12345.0),  # far older than the window: stored raw only
        (base + 100.25, 61.0),
    ]
    for ts, value in points:
        dev.publish(json.dumps({"value": value, "ts": ts}), sensor=sensor)
    dev.flush()
    assert len(wait_stored(influx, "dev-b", sensor, len(points), worker)) == len(points)

    for window, seconds in (("1m", 60.0), ("30s", 30.0)):
        mean, count = reference(points, seconds)
        topic = f"avg/{window}/dev-b/{sensor}"
        # The late (anonymous) subscriber gets the retained average once it is published.
        found: dict[str, object] = {}

        def published(
            topic: str = topic, count: int = count, found: dict[str, object] = found
        ) -> bool:
            doc = retained(mosquitto.port, topic)
            found.update(doc or {})
            return doc is not None and doc["count"] == count

        wait_for(published, 10, f"retained average on {topic}", 0.2)
        assert found["window"] == window
        assert found["value"] == pytest.approx(mean)
        assert found["ts"] == time.strftime("%Y-%m-%dT%H:%M:%S.250Z", time.gmtime(base + 100))
        labels = {"device": "dev-b", "sensor": sensor, "window": window}

        def final_point_written(labels: dict[str, str] = labels, count: int = count) -> bool:
            counts = influx.reader().points("reading_avg", "count", **labels)
            return bool(counts) and counts[-1][1] == count

        wait_for(final_point_written, 10, f"final reading_avg point of {window}", 0.2)
        # The newest point (at the newest reading's time) carries the final average.
        ts_ms, value = influx.reader().points("reading_avg", "value", **labels)[-1]
        assert ts_ms == int((base + 100.25) * 1000)
        assert value == pytest.approx(mean)


def test_bad_input_is_counted_and_dropped_while_good_is_stored(
    worker: Worker, influx: Store, device_factory: Callable[[str], Device]
) -> None:
    dev = device_factory("dev-c")
    sensor = unique("bad")
    now = time.time()
    bad: list[tuple[str, bytes | str, str | None]] = [
        (parsing.OVERSIZED, "1" * 5000, None),
        (parsing.MALFORMED_TOPIC, "1", "live/dev-c/bad$name"),
        (parsing.MALFORMED_TOPIC, "1", "live/dev-c/"),
        (parsing.MALFORMED_TOPIC, "1", "live/dev-c/" + "s" * 80),
        (parsing.INVALID_UTF8, b"\xff\xfe1", None),
        (parsing.INVALID_JSON, '{"value": 1,', None),
        (parsing.NOT_A_NUMBER, "hello", None),
        (parsing.NOT_A_NUMBER, '{"value": "12"}', None),
        (parsing.NOT_FINITE, "NaN", None),
        (parsing.NOT_FINITE, '{"value": Infinity}', None),
        (parsing.NOT_FINITE, "1e999", None),
        (parsing.OUT_OF_RANGE, "1e12", None),
        (parsing.BAD_TS, '{"value": 1, "ts": "yesterday"}', None),
        (parsing.BAD_TS, '{"value": 1, "ts": true}', None),
        (parsing.FUTURE_TS, json.dumps({"value": 1, "ts": now + 3600}), None),
    ]
    expected: dict[str, int] = {}
    for reason, _, _ in bad:
        expected[reason] = expected.get(reason, 0) + 1
    before = {reason: worker.rejected(reason) for reason in parsing.REASONS}
    good = []
    for i, (_, payload, topic) in enumerate(bad):
        ts = now - 100 + i
        good.append((round(ts * 1000), float(i)))
        dev.publish(json.dumps({"value": i, "ts": ts}), sensor=sensor)
        dev.publish(payload, sensor=sensor, topic=topic)
    dev.publish(json.dumps({"value": 999, "ts": now - 1}), sensor=sensor)
    good.append((round((now - 1) * 1000), 999.0))
    dev.flush()
    assert wait_stored(influx, "dev-c", sensor, len(good), worker) == good
    wait_for(
        lambda: all(worker.rejected(r) - before[r] == expected.get(r, 0) for r in parsing.REASONS),
        10,
        "rejections counted",
        0.2,
    )
    assert worker.proc.running()
    log = worker.proc.log_text()
    for reason in expected:
        assert f"rejected a reading ({reason})" in log
    # Rate limiting: one line per reason per interval, however many arrive.
    assert log.count("rejected a reading (not_finite)") == 1
