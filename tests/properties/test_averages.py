"""Moving averages against a slow reference, and the memory caps (pure, no processes).

The reference recomputes each window from the full list of readings seen so far: the mean of
the distinct (ts, value) readings with ts in (newest - W, newest]. The fast implementation must
agree after every single reading, in order or not, with duplicates (MQTT redeliveries) and with
several windows at once; and its caps (series count, points per series) must hold whatever
arrives.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.averages import Averages
from ingest.parsing import Reading
from ingest.settings import Window

PROPS = settings(deadline=None, max_examples=150)
WINDOWS = (Window("1m", 60.0), Window("15s", 15.0))
T0 = 1_700_000_000.0

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def reference(seen: list[tuple[float, float]], window_s: float) -> tuple[float, int, float]:
    """(mean, count, newest ts) recomputed from every reading seen so far."""
    newest = max(ts for ts, _ in seen)
    inside = [v for ts, v in set(seen) if newest - window_s < ts <= newest]
    return math.fsum(inside) / len(inside), len(inside), newest


def close(fast: float, slow: float, magnitude: float, n: int) -> bool:
    # Running sums lose a few ulps of the largest value per update; fsum-recomputation bounds it.
    return math.isclose(fast, slow, rel_tol=1e-9, abs_tol=1e-12 * (magnitude + 1) * (n + 1))


def check_against_reference(readings: list[tuple[float, float]]) -> None:
    averages = Averages(WINDOWS, max_series=10, max_points=100_000)
    seen: list[tuple[float, float]] = []
    magnitude = max(abs(v) for _, v in readings)
    for ts, value in readings:
        averages.add(Reading("dev", "power", value, ts))
        seen.append((ts, value))
        for window in WINDOWS:
            mean, count, newest = reference(seen, window.seconds)
            got = averages.get("dev", "power", window.label)
            assert got is not None
            assert got.count == count, (window, seen)
            assert got.ts == newest
            assert close(got.value, mean, magnitude, len(seen)), (got.value, mean, window)


@st.composite
def in_order(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Readings with non-decreasing times (steps of 0 to 40 s, so windows fill and drain)."""
    steps = draw(st.lists(st.floats(min_value=0, max_value=40, allow_nan=False), min_size=1))
    ts = T0
    out = []
    for step in steps:
        ts += step
        out.append((ts, draw(values)))
    return out


@st.composite
def out_of_order(draw: st.DrawFn) -> list[tuple[float, float]]:
    """Readings in any order, some exact duplicates, some equal times with different values."""
    offsets = st.floats(min_value=0, max_value=200, allow_nan=False) | st.integers(0, 200).map(
        float
    )
    readings = draw(st.lists(st.tuples(offsets.map(lambda o: T0 + o), values), min_size=1))
    extra = draw(st.lists(st.sampled_from(readings), max_size=len(readings)))
    return draw(st.permutations(readings + extra))


@PROPS
@given(readings=in_order())
def test_in_order_matches_reference(readings: list[tuple[float, float]]) -> None:
    check_against_reference(readings)


@PROPS
@given(readings=out_of_order())
def test_out_of_order_matches_reference(readings: list[tuple[float, float]]) -> None:
    check_against_reference(readings)


@PROPS
@given(
    readings=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 120), values), min_size=1
    )
)
def test_take_updates_reports_exactly_the_current_averages(
    readings: list[tuple[str, int, float]],
) -> None:
    averages = Averages(WINDOWS, max_series=10, max_points=100_000)
    seen: dict[str, list[tuple[float, float]]] = {}
    for i, (device, offset, value) in enumerate(readings):
        averages.add(Reading(device, "s", value, T0 + offset))
        seen.setdefault(device, []).append((T0 + offset, value))
        if i % 3 == 0:
            for update in averages.take_updates():
                window = next(w for w in WINDOWS if w.label == update.window)
                mean, count, newest = reference(seen[update.device], window.seconds)
                assert (update.count, update.ts) == (count, newest)
                assert close(update.value, mean, 1e6, len(readings))
    averages.take_updates()
    assert averages.take_updates() == []  # nothing changed since


@PROPS
@given(
    max_series=st.integers(1, 20),
    devices=st.lists(st.integers(0, 60).map(lambda i: f"dev-{i}"), min_size=1, max_size=300),
)
def test_series_cap_keeps_the_most_recently_updated(max_series: int, devices: list[str]) -> None:
    averages = Averages(WINDOWS, max_series=max_series, max_points=10)
    lru: OrderedDict[str, None] = OrderedDict()  # the reference: least recently updated first
    evicted = 0
    for i, device in enumerate(devices):
        averages.add(Reading(device, "power", float(i), T0 + i))
        lru[device] = None
        lru.move_to_end(device)
        if len(lru) > max_series:
            lru.popitem(last=False)
            evicted += 1
        assert len(averages) == len(lru) <= max_series
        averages.take_updates()  # must never name an evicted series
    for device in set(devices):
        assert (averages.get(device, "power", "1m") is not None) == (device in lru)
    assert averages.evicted_series == evicted


@PROPS
@given(
    max_points=st.integers(1, 30),
    offsets=st.lists(st.integers(0, 5_000), min_size=1, max_size=300, unique=True),
    vals=st.lists(values, min_size=300, max_size=300),
)
def test_points_cap_keeps_the_newest_readings(
    max_points: int, offsets: list[int], vals: list[float]
) -> None:
    """Unique times (in 0.01 s steps, any order): the state is the newest `max_points` of the
    readings in the window, and never more."""
    averages = Averages(WINDOWS, max_series=1, max_points=max_points)
    seen: list[tuple[float, float]] = []
    for offset, value in zip(offsets, vals, strict=False):
        ts = T0 + offset / 100
        averages.add(Reading("dev", "power", value, ts))
        seen.append((ts, value))
        for window in WINDOWS:
            newest = max(t for t, _ in seen)
            inside = sorted(r for r in seen if newest - window.seconds < r[0] <= newest)
            kept = inside[-max_points:]
            got = averages.get("dev", "power", window.label)
            assert got is not None
            assert got.count == len(kept) <= max_points
            assert close(got.value, math.fsum(v for _, v in kept) / len(kept), 1e6, len(seen))
