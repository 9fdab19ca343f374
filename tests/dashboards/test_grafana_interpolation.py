"""The Grafana interpolation the dashboard tests rely on, checked against Grafana's own rules."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.dashboards import grafana


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "500ms"), (1, "1s"), (1.5, "1.5s"), (10, "10s"), (60, "1m0s"), (90, "1m30s"),
     (3600, "1h0m0s"), (3725, "1h2m5s")],
)  # fmt: skip
def test_window_period_is_formatted_as_go_formats_durations(seconds: float, text: str) -> None:
    assert grafana.go_duration(seconds) == text


def test_flux_and_dashboard_variables_are_substituted() -> None:
    start = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)
    query = (
        "from(bucket: v.defaultBucket) |> range(start: v.timeRangeStart, stop: v.timeRangeStop)"
        " |> filter(fn: (r) => r.device =~ /^${device:regex}$/ and r.sensor =~ /^${sensor:regex}$/)"
        " |> aggregateWindow(every: v.windowPeriod, fn: mean)"
    )
    variables = {n: grafana.Variable(n, ".*") for n in ("device", "sensor")}
    text = grafana.interpolate(
        query,
        start=start,
        stop=start + dt.timedelta(hours=1),
        interval_s=60,
        default_bucket="telemetry",
        variables=variables,
        selected={"device": ["plug.1", "a/b"]},
    )
    assert text == (
        'from(bucket: "telemetry")'
        " |> range(start: 2026-12-02T10:00:00Z, stop: 2026-12-02T11:00:00Z)"
        r" |> filter(fn: (r) => r.device =~ /^(plug\.1|a\/b)$/ and r.sensor =~ /^.*$/)"
        " |> aggregateWindow(every: 1m0s, fn: mean)"
    )


def test_all_without_an_all_value_is_refused() -> None:
    with pytest.raises(ValueError, match="allValue"):
        grafana.format_value([grafana.ALL], "regex", None)
