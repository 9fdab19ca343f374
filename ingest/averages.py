"""Moving averages per (device, sensor, window). Pure, no I/O, single-threaded.

The average of a series over a window W is the mean of its readings whose timestamp lies in
(newest_ts - W, newest_ts], newest_ts being the newest reading time seen for that series.

- In-order readings cost O(1) amortized: a deque sorted by time, a running sum and count, and
  eviction from the left.
- An out-of-order reading still inside the window is inserted in place (a scan from the right;
  late readings are rare and usually recent).
- A reading older than the window start is ignored here (it is still stored raw).
- An exact duplicate (same time and value, e.g. an MQTT redelivery) is ignored.
- Memory is bounded: at most `max_points` per window (the oldest go first) and at most
  `max_series` series (the least recently updated go first).
- The running sum is recomputed with math.fsum every max(1024, len) updates, so add/subtract
  rounding cannot drift; that keeps the amortized cost O(1).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ingest.parsing import Reading
from ingest.settings import Window

_RECOMPUTE_MIN = 1024


@dataclass(frozen=True, slots=True)
class AverageUpdate:
    device: str
    sensor: str
    window: str
    value: float
    count: int
    ts: float  # newest reading time in the window, epoch seconds


class WindowAverage:
    """The readings of one series inside one window, with their running sum."""

    __slots__ = ("_since_recompute", "_sum", "changed", "max_points", "points", "seconds")

    def __init__(self, seconds: float, max_points: int) -> None:
        self.seconds = seconds
        self.max_points = max_points
        self.points: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._since_recompute = 0
        self.changed = False  # since the last publication

    @property
    def count(self) -> int:
        return len(self.points)

    @property
    def newest(self) -> float:
        return self.points[-1][0] if self.points else -math.inf

    @property
    def mean(self) -> float:
        return self._sum / len(self.points) if self.points else math.nan

    def add(self, ts: float, value: float) -> bool:
        """Take one reading; True if the average's content changed."""
        points = self.points
        if not points or ts > points[-1][0]:
            points.append((ts, value))
            self._sum += value
            self._evict_before(ts - self.seconds)
        elif ts <= points[-1][0] - self.seconds:
            return False  # older than the window: stored raw, no effect here
        elif not self._insert(ts, value):
            return False
        if len(points) > self.max_points:
            self._sum -= points.popleft()[1]
        self._since_recompute += 1
        if self._since_recompute >= max(_RECOMPUTE_MIN, len(points)):
            self._sum = math.fsum(v for _, v in points)
            self._since_recompute = 0
        self.changed = True
        return True

    def _insert(self, ts: float, value: float) -> bool:
        points = self.points
        i = len(points)
        while i > 0 and points[i - 1][0] >= ts:
            if points[i - 1] == (ts, value):
                return False  # duplicate
            i -= 1
        points.insert(i, (ts, value))
        self._sum += value
        return True

    def _evict_before(self, start: float) -> None:
        """Drop readings at or before `start` (the window is open on the left)."""
        points = self.points
        while points and points[0][0] <= start:
            self._sum -= points.popleft()[1]
            self._since_recompute += 1
        if not points:
            self._sum = 0.0


class Averages:
    """All series' windows, the set changed since the last `take_updates`, and the caps."""

    def __init__(
        self, windows: Sequence[Window], max_series: int = 10_000, max_points: int = 20_000
    ) -> None:
        if not windows:
            raise ValueError("at least one window")
        self.windows = tuple(windows)
        self.max_series = max_series
        self.max_points = max_points
        self._series: OrderedDict[tuple[str, str], list[WindowAverage]] = OrderedDict()
        self._dirty: set[tuple[str, str]] = set()
        self.evicted_series = 0

    def __len__(self) -> int:
        return len(self._series)

    def add(self, reading: Reading) -> None:
        key = (reading.device, reading.sensor)
        series = self._series.get(key)
        if series is None:
            series = [WindowAverage(w.seconds, self.max_points) for w in self.windows]
            self._series[key] = series
            while len(self._series) > self.max_series:
                old, _ = self._series.popitem(last=False)
                self._dirty.discard(old)
                self.evicted_series += 1
        else:
            self._series.move_to_end(key)
        changed = False
        for window in series:
            changed = window.add(reading.ts, reading.value) or changed
        if changed:
            self._dirty.add(key)

    def add_all(self, readings: Iterable[Reading]) -> None:
        for reading in readings:
            self.add(reading)

    def get(self, device: str, sensor: str, window: str) -> AverageUpdate | None:
        series = self._series.get((device, sensor))
        if series is None:
            return None
        for spec, state in zip(self.windows, series, strict=True):
            if spec.label == window:
                return _update(device, sensor, spec.label, state)
        return None

    def take_updates(self) -> list[AverageUpdate]:
        """The current average of every window of every series changed since the last call."""
        updates = []
        for key in self._dirty:
            series = self._series[key]
            for spec, state in zip(self.windows, series, strict=True):
                if state.changed:
                    state.changed = False
                    updates.append(_update(key[0], key[1], spec.label, state))
        self._dirty.clear()
        return updates


def _update(device: str, sensor: str, label: str, state: WindowAverage) -> AverageUpdate:
    return AverageUpdate(device, sensor, label, state.mean, state.count, state.newest)
