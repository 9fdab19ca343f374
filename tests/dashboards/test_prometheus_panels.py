"""Every Prometheus panel of the Grafana dashboards, run against a real Prometheus that scraped
the dashboard stack (tests/dashboards/conftest.py) while it worked.

Grafana asks Prometheus for a panel's series over the dashboard's range (`query_range`); here
the range is the stack's whole life, `$__rate_interval` is 4 scrape intervals and `$__range`
the range. Each panel's answer must hold what the stack did: the worker and broker_auth up,
the 40 readings received and stored, the 3 rejected ones under their reason, the grant applied.
A Prometheus panel without a check here fails the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from testing.procs import wait_for
from tests.dashboards import grafana
from tests.dashboards.conftest import READINGS, DashboardStack
from tests.dashboards.test_flux_queries import DASHBOARDS, PROMETHEUS_UID

RATE_INTERVAL = "4s"  # Grafana's $__rate_interval: 4 x the 1 s scrape interval
TARGETS = [t for t in grafana.targets(DASHBOARDS) if t.datasource_uid == PROMETHEUS_UID]
Series = list[dict[str, Any]]


def values(series: Series) -> list[float]:
    return [float(v) for s in series for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]


def last(series: Series) -> list[float]:
    return [float(s["values"][-1][1]) for s in series]


def one(expected: float) -> Callable[[DashboardStack, Series], None]:
    def check(_: DashboardStack, series: Series) -> None:
        assert last(series) == [expected], series

    return check


def positive(_: DashboardStack, series: Series) -> None:
    assert series and max(values(series)) > 0, series


def non_negative(_: DashboardStack, series: Series) -> None:
    assert series and min(values(series)) >= 0, series


def rejected_total(_: DashboardStack, series: Series) -> None:
    assert last(series) and last(series)[0] >= 3, series  # the 3 garbage readings


def rejected_by_reason(_: DashboardStack, series: Series) -> None:
    # Every reason is a series from the start (at 0); only the garbage's shows a rate.
    assert {"invalid_json", "bad_ts", "oversized"} <= {s["metric"].get("reason") for s in series}
    rising = {s["metric"]["reason"] for s in series if values([s]) and max(values([s])) > 0}
    assert rising == {"not_a_number"}, series  # b"not json": neither JSON nor a number


def readings_per_second(stack: DashboardStack, series: Series) -> None:
    # The 40 readings came in within a few seconds: the rate peaked above zero, and summed
    # over the range at the scrape step it comes to about what was sent.
    assert series and max(values(series)) > 0, series


def latency(_: DashboardStack, series: Series) -> None:
    got = values(series)
    assert got and all(0 < v < 10 for v in got), series  # seconds per write


def points_per_write(_: DashboardStack, series: Series) -> None:
    got = values(series)
    assert got and all(1 <= v <= len(READINGS) for v in got), series


def store_errors(_: DashboardStack, series: Series) -> None:
    assert series and max(values(series)) == 0, series  # the store took every batch


def grant_seconds(_: DashboardStack, series: Series) -> None:
    got = values(series)
    assert got and all(0 <= v < 30 for v in got), series  # the grant took effect in seconds


def nothing_ended(_: DashboardStack, series: Series) -> None:
    # The grant still runs: the panel's series is there, with no value (NaN) yet.
    assert series and values(series) == [], series


def series_tracked(_: DashboardStack, series: Series) -> None:
    assert last(series) and last(series)[0] >= 1, series


CHECKS: dict[tuple[str, str, str], Callable[[DashboardStack, Series], None]] = {
    ("ingest-health", "Ingest worker up", 'up{job="ingest"}'): one(1),
    ("ingest-health", "MQTT connected", "ingest_mqtt_ready"): one(1),
    ("ingest-health", "broker_auth up", 'up{job="broker_auth"}'): one(1),
    ("ingest-health", "Unacknowledged messages", "ingest_buffer_depth"): non_negative,
    ("ingest-health", "Series tracked", "ingest_series"): series_tracked,
    (
        "ingest-health",
        "Rejected (range)",
        "sum(increase(ingest_readings_rejected_total[$__range]))",
    ): rejected_total,
    (
        "ingest-health",
        "Readings per second",
        "sum(rate(ingest_readings_received_total[$__rate_interval]))",
    ): readings_per_second,
    (
        "ingest-health",
        "Readings per second",
        "sum(rate(ingest_readings_stored_total[$__rate_interval]))",
    ): readings_per_second,
    (
        "ingest-health",
        "Readings per second",
        "sum(rate(ingest_readings_rejected_total[$__rate_interval]))",
    ): positive,
    (
        "ingest-health",
        "Rejected by reason",
        "sum by (reason) (rate(ingest_readings_rejected_total[$__rate_interval]))",
    ): rejected_by_reason,
    **{
        (
            "ingest-health",
            "Store write latency",
            f"histogram_quantile({q}, sum by (le) "
            "(rate(ingest_store_write_seconds_bucket[$__rate_interval])))",
        ): latency
        for q in ("0.5", "0.95", "0.99")
    },
    (
        "ingest-health",
        "Points per write",
        "sum(rate(ingest_store_batch_points_sum[$__rate_interval]))"
        " / sum(rate(ingest_store_batch_points_count[$__rate_interval]))",
    ): points_per_write,
    (
        "ingest-health",
        "Points per write",
        "sum(rate(ingest_store_write_seconds_count[$__rate_interval]))",
    ): positive,
    (
        "ingest-health",
        "Store errors",
        "sum(rate(ingest_store_errors_total[$__rate_interval]))",
    ): store_errors,
    (
        "ingest-health",
        "Store errors",
        "sum(rate(ingest_store_dropped_points_total[$__rate_interval]))",
    ): store_errors,
    (
        "ingest-health",
        "Moving averages published per second",
        "sum(rate(ingest_averages_published_total[$__rate_interval]))",
    ): positive,
    ("ingest-health", "broker_auth dependencies", "broker_auth_mongo_up"): one(1),
    ("ingest-health", "broker_auth dependencies", "broker_auth_broker_up"): one(1),
    ("ingest-health", "broker_auth dependencies", "broker_auth_node_up"): one(1),
    (
        "ingest-health",
        "Grant takes effect / ends (p95)",
        "histogram_quantile(0.95, sum by (le) "
        "(rate(broker_auth_grant_apply_seconds_bucket[$__rate_interval])))",
    ): grant_seconds,
    (
        "ingest-health",
        "Grant takes effect / ends (p95)",
        "histogram_quantile(0.95, sum by (le) "
        "(rate(broker_auth_revoke_lag_seconds_bucket[$__rate_interval])))",
    ): nothing_ended,
}


def test_every_prometheus_panel_has_a_check() -> None:
    assert {(t.dashboard, t.panel, t.query) for t in TARGETS} == set(CHECKS), (
        "a Prometheus panel without a check here, or a check without its panel"
    )


def _expand(expr: str, range_s: int) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__range", f"{range_s}s")


@pytest.mark.parametrize(
    "target", TARGETS, ids=[f"{t.dashboard}:{t.panel}:{t.ref}" for t in TARGETS]
)
def test_panel_query_returns_what_the_panel_shows(
    dashboard_stack: DashboardStack, target: grafana.Target
) -> None:
    prometheus = dashboard_stack.prometheus
    assert prometheus is not None
    start, end = dashboard_stack.started_at, time.time()
    expr = _expand(target.query, int(end - start) + 1)
    series = wait_for(lambda: prometheus.query_range(expr, start, time.time()), 10, expr, 0.5)
    CHECKS[(target.dashboard, target.panel, target.query)](dashboard_stack, series)
