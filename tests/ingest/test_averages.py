"""Moving averages against a brute-force reference (pure, no processes)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.averages import Averages, WindowAverage
from ingest.parsing import Reading
from ingest.settings import Window, parse_window, parse_windows

W = Window("1m", 60.0)


def reference(points: list[tuple[float, float]], window: float) -> tuple[float, int]:
    """Mean and count of what the store keeps (the last value per millisecond) in
    (newest - window, newest]."""
    kept = {round(ts * 1000): v for ts, v in points}
    newest = max(kept)
    inside = [v for t, v in kept.items() if newest - window * 1000 < t <= newest]
    return math.fsum(inside) / len(inside), len(inside)


def feed(points: list[tuple[float, float]], window: float = 60.0) -> WindowAverage:
    state = WindowAverage(window, max_points=100_000)
    for ts, v in points:
        state.add(ts, v)
    return state


def test_in_order_evicts_from_the_left() -> None:
    points = [(1000.0 + i, float(i)) for i in range(200)]
    state = feed(points)
    assert (state.mean, state.count) == pytest.approx(reference(points, 60.0))
    assert state.count == 60 and state.newest == 1199.0


def test_window_edge_is_open_on_the_left() -> None:
    state = feed([(1000.0, 1.0), (1030.0, 2.0), (1060.0, 3.0)])
    # 1000 == 1060 - 60 lies on the edge: excluded.
    assert (state.mean, state.count) == (2.5, 2)
    state.add(1060.5, 4.0)
    assert state.count == 3
    state.add(1090.0, 5.0)  # evicts 1030 (== 1090 - 60)
    assert (state.mean, state.count) == (4.0, 3)


def test_out_of_order_inside_window_is_inserted() -> None:
    state = feed([(1000.0, 1.0), (1050.0, 3.0)])
    assert state.add(1020.0, 2.0)
    assert list(state.points) == [(1000.0, 1.0), (1020.0, 2.0), (1050.0, 3.0)]
    assert (state.mean, state.count) == (2.0, 3)
    state.add(1075.0, 4.0)  # evicts 1000 (<= 1015) only
    assert [ts for ts, _ in state.points] == [1020.0, 1050.0, 1075.0]


def test_older_than_window_is_ignored() -> None:
    state = feed([(1000.0, 1.0), (1100.0, 3.0)])
    assert not state.add(1040.0, 100.0)  # 1040 == 1100 - 60: outside
    assert not state.add(500.0, 100.0)
    assert (state.mean, state.count) == (3.0, 1)


def test_exact_duplicates_are_ignored() -> None:
    state = feed([(1000.0, 1.0), (1010.0, 2.0), (1020.0, 3.0)])
    assert not state.add(1010.0, 2.0)
    assert not state.add(1020.0, 3.0)
    assert (state.mean, state.count) == (2.0, 3)


def test_same_time_counts_once_with_the_last_value_like_the_store() -> None:
    """Two readings of a series in one millisecond are one point in InfluxDB (the last value
    written wins); the average counted both until this was fixed."""
    state = feed([(1000.0, 1.0), (1010.0, 2.0), (1020.0, 3.0)])
    assert state.add(1020.0, 9.0)
    assert (state.mean, state.count) == (4.0, 3)
    assert state.add(1010.0004, 5.0)  # the same millisecond as 1010.0
    assert (state.mean, state.count) == (5.0, 3)
    assert state.points == [(1000.0, 1.0), (1010.0, 5.0), (1020.0, 9.0)]


def test_a_future_stamped_reading_does_not_freeze_the_window() -> None:
    """One reading stamped 299 s ahead used to become the window's end: every honest reading of
    the next ~4 minutes was then "older than the window" and the average froze."""
    now = 10_000.0
    state = WindowAverage(60.0, max_points=1000)
    for i in range(10):
        state.add(now - 10 + i, 1.0, now)
    assert not state.add(now + 299, 1000.0, now)  # held, not in the average yet
    assert (state.mean, state.count) == (1.0, 10)
    for i in range(1, 271):  # honest readings keep coming, one a second
        assert state.add(now + i, 2.0, now + i)
    assert state.count == 60 and state.mean == 2.0
    assert state.newest == now + 270
    assert state.advance(now + 299)  # the clock reaches the held reading: now it counts
    assert state.newest == now + 299
    assert state.count == 31 + 1  # (now+239, now+299]: honest 240..270 and the held one
    assert state.mean == (31 * 2.0 + 1000.0) / 32


def test_points_per_series_are_capped() -> None:
    state = WindowAverage(3600.0, max_points=10)
    for i in range(25):
        state.add(float(i), float(i))
    assert state.count == 10
    assert state.mean == pytest.approx(sum(range(15, 25)) / 10)


def test_no_float_drift_over_long_runs() -> None:
    rng = random.Random(1)
    state = WindowAverage(10.0, max_points=100_000)
    points = []
    for i in range(200_000):
        v = rng.choice([1e9, 1e-3, -1e9 + 0.5, 123.456])
        points.append((i * 0.1, v))
        state.add(i * 0.1, v)
    expected, count = reference(points[-200:], 10.0)
    assert state.count == count
    assert state.mean == pytest.approx(expected, rel=1e-9, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=400).map(lambda x: x / 2),
            st.integers(min_value=-1000, max_value=1000).map(float),
        ),
        min_size=1,
        max_size=120,
    ),
    st.sampled_from([5.0, 30.0, 60.0]),
)
def test_matches_reference_for_any_arrival_order(
    points: list[tuple[float, float]], window: float
) -> None:
    state = feed(points, window)
    mean, count = reference(points, window)
    assert state.count == count
    assert state.mean == pytest.approx(mean)
    times = [ts for ts, _ in state.points]
    assert times == sorted(times)


def test_series_windows_updates_and_caps() -> None:
    averages = Averages([Window("1m", 60), Window("10s", 10)], max_series=2)
    averages.add(Reading("a", "p", 10.0, 1000.0))  # (times long past: the clock does not bind)
    averages.add(Reading("a", "p", 20.0, 1030.0))
    updates = {(u.device, u.window): u for u in averages.take_updates()}
    assert updates[("a", "1m")].value == 15.0 and updates[("a", "1m")].count == 2
    assert updates[("a", "10s")].value == 20.0 and updates[("a", "10s")].count == 1
    assert updates[("a", "1m")].ts == 1030.0
    assert averages.take_updates() == []  # nothing changed since
    averages.add(Reading("a", "p", 5.0, 1015.0))  # inside 1m only
    assert [(u.window, u.count) for u in averages.take_updates()] == [("1m", 3)]
    averages.add(Reading("b", "p", 1.0, 1000.0))
    averages.add(Reading("a", "p", 1.0, 1031.0))  # a is now the most recent
    averages.add(Reading("c", "p", 1.0, 1000.0))  # evicts b, the idle one
    assert len(averages) == 2 and averages.evicted_series == 1
    assert averages.get("b", "p", "1m") is None
    assert averages.get("a", "p", "1m") is not None


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("1m", 60), ("15m", 900), ("1h", 3600), ("2d", 172800)]
)
def test_window_forms(text: str, seconds: float) -> None:
    assert parse_window(text) == Window(text, seconds)


@pytest.mark.parametrize("text", ["", "0m", "1", "m", "1w", "1.5m", "1m,1m"])
def test_bad_windows(text: str) -> None:
    with pytest.raises(ValueError):
        parse_windows(text)
