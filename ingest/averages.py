"""Moving averages per (device, sensor, window). Pure, no I/O, single-threaded.

Definition (what one owner computes, whatever order the readings come in):
- times are the store's: milliseconds (`ts_ms`), so two readings of a series in one millisecond
  are one point, as in InfluxDB, which keeps the last value written; so does the average;
- the window of length W ends at E = min(newest reading time of the series, the owner's clock):
  the average is the mean of the points with time in (E - W, E]. A reading stamped ahead of the
  clock (allowed up to INGEST_MAX_FUTURE_S) is held and enters the window when the clock reaches
  it, so it cannot push E ahead and make the honest readings that follow look "too old";
- a reading at or before E - W is ignored here (it is still stored raw). E never moves back, so
  such a reading would be outside every later window too: the state after a set of readings does
  not depend on their arrival order, which is what lets several workers feed one owner exactly.

Cost: in-order readings O(1) amortized (a deque of times, a dict of values, a running sum);
a late reading inside the window is inserted in place (a scan from the right). Memory is bounded:
at most `max_points` per window (the oldest go first) and `max_series` series (the least recently
updated go first); past a cap the average is no longer exact, by design. The running sum is
recomputed with math.fsum every max(1024, len) updates, so rounding cannot drift.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ingest.parsing import Reading, ts_ms
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
    """The points of one series for one window: inside it, and held ahead of the clock."""

    __slots__ = (
        "_since_recompute",
        "_sum",
        "ahead",
        "changed",
        "end",
        "max_points",
        "newest_seen",
        "times",
        "values",
        "width",
    )

    def __init__(self, seconds: float, max_points: int) -> None:
        self.width = round(seconds * 1000)
        self.max_points = max_points
        self.end: int | None = None  # E, in ms; None before the first reading
        self.newest_seen = -(2**63)  # newest time of any reading taken (ms)
        self.times: deque[int] = deque()  # inside (E - W, E], ascending
        self.ahead: list[int] = []  # heap of times > E, held until the clock reaches them
        self.values: dict[int, float] = {}  # value of every point in `times` and `ahead`
        self._sum = 0.0
        self._since_recompute = 0
        self.changed = False  # since the last publication

    @property
    def count(self) -> int:
        return len(self.times)

    @property
    def newest(self) -> float:
        """Time of the newest point inside the window (epoch seconds)."""
        return self.times[-1] / 1000 if self.times else -math.inf

    @property
    def mean(self) -> float:
        return self._sum / len(self.times) if self.times else math.nan

    @property
    def points(self) -> list[tuple[float, float]]:
        """(time in seconds, value) of the points inside the window, oldest first."""
        return [(t / 1000, self.values[t]) for t in self.times]

    def add(self, ts: float, value: float, now: float = math.inf) -> bool:
        """Take one reading (times in epoch seconds); True if the average changed."""
        t = ts_ms(ts)
        end = self.end
        if end is not None and t > end and not self.ahead and t <= now * 1000:
            # The common case, a newer reading not ahead of the clock: it becomes the end.
            self.values[t] = value
            self.times.append(t)
            self._sum += value
            self.end = t
            if t > self.newest_seen:
                self.newest_seen = t
            self._evict(t - self.width)
            if len(self.values) > self.max_points:
                self._cap()
            self._touch()
            return True
        old = self.values.get(t)
        if old is not None:
            if old == value:
                return False  # the same point again (an MQTT redelivery)
            self.values[t] = value  # the store keeps the last value written
            if end is not None and t <= end:
                self._sum += value - old
                self._touch()
                return True
            return False  # still held ahead
        if end is not None and t <= end - self.width:
            return False  # older than the window: stored raw, no effect here
        self.values[t] = value
        changed = False
        if end is None or t > end:
            heapq.heappush(self.ahead, t)
        else:
            self._insert(t)
            self._sum += value
            changed = True
        self.newest_seen = max(self.newest_seen, t)
        changed = self.advance(now) or changed
        self._cap()
        if changed:
            self._touch()
        return changed

    def advance(self, now: float) -> bool:
        """Move E to min(newest reading, clock); True if the window's content changed."""
        target = self.newest_seen if now == math.inf else min(self.newest_seen, ts_ms(now))
        if self.end is not None and target <= self.end:
            return False
        self.end = target
        changed = False
        ahead, times, values = self.ahead, self.times, self.values
        while ahead and ahead[0] <= target:
            t = heapq.heappop(ahead)
            times.append(t)  # every held time is above every time inside
            self._sum += values[t]
            changed = True
        changed = self._evict(target - self.width) or changed
        if changed:
            self._touch()
        return changed

    def _evict(self, start: int) -> bool:
        """Drop the points at or before `start` (the window is open on the left)."""
        times, values = self.times, self.values
        evicted = False
        while times and times[0] <= start:
            self._sum -= values.pop(times.popleft())
            self._since_recompute += 1
            evicted = True
        if not times:
            self._sum = 0.0
        return evicted

    def _insert(self, t: int) -> None:
        times = self.times
        if not times or t > times[-1]:
            times.append(t)
            return
        i = len(times)
        while i > 0 and times[i - 1] > t:
            i -= 1
        times.insert(i, t)

    def _cap(self) -> None:
        values = self.values
        while len(values) > self.max_points:
            if self.times:
                self._sum -= values.pop(self.times.popleft())
            else:
                values.pop(heapq.heappop(self.ahead))

    def _touch(self) -> None:
        self.changed = True
        self._since_recompute += 1
        if self._since_recompute >= max(_RECOMPUTE_MIN, len(self.times)):
            self._sum = math.fsum(self.values[t] for t in self.times)
            self._since_recompute = 0


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
        self._holding: set[tuple[str, str]] = set()  # series with points ahead of the clock
        self.evicted_series = 0

    def __len__(self) -> int:
        return len(self._series)

    def add(self, reading: Reading, now: float | None = None) -> None:
        """Take one reading; `now` is the owner's clock (epoch seconds; default: time.time())."""
        clock = time.time() if now is None else now
        key = (reading.device, reading.sensor)
        series = self._series.get(key)
        if series is None:
            series = [WindowAverage(w.seconds, self.max_points) for w in self.windows]
            self._series[key] = series
            while len(self._series) > self.max_series:
                old, _ = self._series.popitem(last=False)
                self._dirty.discard(old)
                self._holding.discard(old)
                self.evicted_series += 1
        else:
            self._series.move_to_end(key)
        changed = False
        holding = False
        for window in series:
            changed = window.add(reading.ts, reading.value, clock) or changed
            holding = holding or bool(window.ahead)
        if changed:
            self._dirty.add(key)
        if holding:
            self._holding.add(key)

    def add_all(self, readings: Iterable[Reading], now: float | None = None) -> None:
        clock = time.time() if now is None else now
        for reading in readings:
            self.add(reading, clock)

    def advance(self, now: float | None = None) -> None:
        """Let the clock bring held readings into their windows (call before publishing)."""
        clock = time.time() if now is None else now
        for key in list(self._holding):
            series = self._series[key]
            if any([w.advance(clock) for w in series]):
                self._dirty.add(key)
            if not any(w.ahead for w in series):
                self._holding.discard(key)

    def get(self, device: str, sensor: str, window: str) -> AverageUpdate | None:
        series = self._series.get((device, sensor))
        if series is None:
            return None
        for spec, state in zip(self.windows, series, strict=True):
            if spec.label == window:
                return _update(device, sensor, spec.label, state)
        return None

    def take_updates(self) -> list[AverageUpdate]:
        """The current average of every window of every series changed since the last call.

        A window left empty (the clock moved past its points) is not published: the last
        average stays the retained one.
        """
        updates = []
        for key in self._dirty:
            series = self._series[key]
            for spec, state in zip(self.windows, series, strict=True):
                if state.changed:
                    state.changed = False
                    if state.times:
                        updates.append(_update(key[0], key[1], spec.label, state))
        self._dirty.clear()
        return updates


def _update(device: str, sensor: str, label: str, state: WindowAverage) -> AverageUpdate:
    return AverageUpdate(device, sensor, label, state.mean, state.count, state.newest)
