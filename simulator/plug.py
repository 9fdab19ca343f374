"""A simulated smart plug's power draw in watts: on/off periods, drift, noise, inrush."""

from __future__ import annotations

import random


class SmartPlug:
    """Draws a few hundred watts while its appliance runs, about a watt on standby.

    On and off periods have exponentially distributed lengths (means `mean_on_s`, `mean_off_s`);
    while on, the draw drifts slowly around the appliance's nominal power with a little noise,
    and the first sample after switching on shows an inrush spike.
    """

    def __init__(
        self,
        rng: random.Random,
        now: float,
        mean_on_s: float = 90.0,
        mean_off_s: float = 45.0,
    ) -> None:
        self._rng = rng
        self.mean_on_s = mean_on_s
        self.mean_off_s = mean_off_s
        self.nominal_w = rng.uniform(150.0, 900.0)
        self.standby_w = rng.uniform(0.3, 2.0)
        self.on = rng.random() < 0.6
        self._level = 1.0  # slow multiplicative drift around the nominal power
        self._inrush = False
        self._until = now + self._period()

    def _period(self) -> float:
        mean = self.mean_on_s if self.on else self.mean_off_s
        return max(1.0, self._rng.expovariate(1.0 / mean))

    def sample(self, now: float) -> float:
        """Power in W at `now` (call with non-decreasing times)."""
        rng = self._rng
        while now >= self._until:
            self.on = not self.on
            self._inrush = self.on
            self._until += self._period()
        if not self.on:
            return round(max(0.0, self.standby_w + rng.gauss(0.0, 0.05)), 2)
        self._level = min(1.1, max(0.9, self._level + rng.gauss(0.0, 0.004)))
        watts = self.nominal_w * self._level * (1.0 + rng.gauss(0.0, 0.015))
        if self._inrush:
            watts *= rng.uniform(1.3, 1.8)
            self._inrush = False
        return round(max(0.0, watts), 2)
