"""Moving averages against a slow reference, and the memory caps (pure, no processes).

The reference recomputes each window from the full list of readings seen so far: the mean of
what the store keeps (the last value per millisecond) with time in (newest - W, newest]. The
fast implementation must agree after every single reading, in order or not, with duplicates
(MQTT redeliveries) and with several windows at once; and its caps (series count, points per
series) must hold whatever arrives.
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
    kept = {round(ts * 1000): v for ts, v in seen}
    newest = max(kept)
    inside = [v for t, v in kept.items() if newest - window_s * 1000 < t <= newest]
    return math.fsum(inside) / len(inside), len(inside), newest / 1000


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


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[float, float, float]]:
    """(ts, value, clock at arrival): unique milliseconds, clocks non-decreasing, some readings
    stamped up to 300 s ahead of their clock, as the parser allows."""
    n = draw(st.integers(1, 80))
    clocks = sorted(draw(st.lists(st.integers(0, 400_000), min_size=n, max_size=n)))
    out = []
    used: set[int] = set()
    for clock in clocks:
        ts = clock + draw(st.integers(-120_000, 300_000))
        if ts in used:
            continue
        used.add(ts)
        out.append((T0 + ts / 1000, draw(values), T0 + clock / 1000))
    return out


@PROPS
@given(readings=arrivals(), data=st.data())
def test_any_arrival_order_gives_the_same_averages(
    readings: list[tuple[float, float, float]], data: st.DataObject
) -> None:
    """What lets N workers feed one owner: the state after a set of readings is the same in any
    arrival order, and it is the mean over (E - W, E] with E = min(newest reading, clock)."""
    final_clock = max(clock for _, _, clock in readings) + data.draw(st.floats(0, 400))
    shuffled = data.draw(st.permutations(readings))
    results = []
    for order in (readings, shuffled):
        averages = Averages(WINDOWS, max_series=10, max_points=100_000)
        clock = T0
        for ts, value, arrival in order:
            clock = max(clock, arrival)  # the owner's clock never goes back
            averages.add(Reading("dev", "power", value, ts), now=max(clock, ts - 300))
        averages.advance(final_clock)
        results.append([averages.get("dev", "power", w.label) for w in WINDOWS])
    newest = max(round(ts * 1000) for ts, _, _ in readings)
    end = min(newest, round(final_clock * 1000))
    for window, first, second in zip(WINDOWS, *results, strict=True):
        width = window.seconds * 1000
        inside = [v for ts, v, _ in readings if end - width < round(ts * 1000) <= end]
        assert first is not None and second is not None
        assert first.count == second.count == len(inside)
        if inside:
            mean = math.fsum(inside) / len(inside)
            assert close(first.value, mean, 1e6, len(readings))
            assert close(second.value, mean, 1e6, len(readings))
