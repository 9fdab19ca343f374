"""Every Flux query of the Grafana dashboards, run against a real InfluxDB that has data.

Each panel's query (and each dashboard variable's query) is interpolated as Grafana does
(tests/dashboards/grafana.py) and sent to the stack's InfluxDB 1.13 over its Flux API, as
Grafana's data source sends it to InfluxDB 2.7 (the same bucket name, `telemetry`, works on
both: on 1.x it is the database with its default retention policy). Each answer must hold the
columns the panel shows and values that match what the stack was given: the device's readings,
the buyer's payment and grant. The Prometheus panels run in test_prometheus_panels.py.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

import pytest

from stack import influxdb
from testing.procs import REPO_ROOT
from tests.dashboards import grafana
from tests.dashboards.conftest import DEVICE, PRODUCT, READINGS, SENSOR, DashboardStack

DASHBOARDS = REPO_ROOT / "dashboard" / "dashboards"
INFLUX_UID = "iot-influxdb"
PROMETHEUS_UID = "iot-prometheus"
INTERVAL_S = 10.0  # what Grafana would pick for a 1 h range on a panel ~360 points wide
Records = list[dict[str, Any]]
META = {"result", "table"}
UNSUBSTITUTED = re.compile(r"\bv\.[a-zA-Z]+\b|\$\{|\$__|\$[a-z]")

FLUX_TARGETS = [t for t in grafana.targets(DASHBOARDS) if t.datasource_uid == INFLUX_UID]


def run(stack: DashboardStack, target: grafana.Target, selected: dict[str, list[str]]) -> Records:
    doc = dict(grafana.dashboards(DASHBOARDS))[target.dashboard]
    now = dt.datetime.now(dt.UTC)
    query = grafana.interpolate(
        target.query,
        start=now - dt.timedelta(hours=1),
        stop=now,
        interval_s=INTERVAL_S,
        default_bucket=influxdb.DATABASE,
        variables=grafana.template_variables(doc),
        selected=selected,
    )
    assert not UNSUBSTITUTED.search(query), query
    return stack.store.reader().flux(query)


def values(records: Records) -> list[float]:
    return [float(r["_value"]) for r in records]


def columns(records: Records) -> set[str]:
    return {k for r in records for k in r} - META


def metric(stack: DashboardStack, name: str) -> float:
    return stack.auth_metrics().get(name, 0.0)


# -- what each panel must show -------------------------------------------------------------
def confirmed_revenue(stack: DashboardStack, records: Records) -> None:
    (total,) = values(records)
    assert total == stack.paid_iota
    assert total == metric(stack, 'broker_auth_payment_iota_total{status="confirmed"}')


def unconfirmed_seen(stack: DashboardStack, records: Records) -> None:
    # Seen pending before it confirmed, or not when a milestone came first: then the panel
    # shows "No data" (no rows) and broker_auth's counter agrees.
    shown = sum(values(records))
    assert shown == metric(stack, 'broker_auth_payment_iota_total{status="unconfirmed"}')
    assert shown in (0, stack.paid_iota)


def active_grants(stack: DashboardStack, records: Records) -> None:
    assert values(records) == [1.0]  # the buyer's grant runs


def access_time_sold(stack: DashboardStack, records: Records) -> None:
    (hours,) = values(records)
    assert hours == pytest.approx(stack.grant_seconds / 3600, rel=1e-6)


def payments_by_status(stack: DashboardStack, records: Records) -> None:
    assert {"_time", "_value", "status"} <= columns(records)
    by_status: dict[str, float] = {}
    for r in records:
        by_status[r["status"]] = by_status.get(r["status"], 0) + float(r["_value"])
    assert by_status.get("confirmed") == stack.paid_iota
    assert set(by_status) <= {"confirmed", "unconfirmed"}


def revenue_per_product(stack: DashboardStack, records: Records) -> None:
    assert {"_time", "_value", "product"} <= columns(records)
    assert {r["product"] for r in records} == {PRODUCT}
    assert sum(values(records)) == stack.paid_iota


def active_grants_per_product(stack: DashboardStack, records: Records) -> None:
    assert {"_time", "_value", "product"} <= columns(records)
    assert {r["product"] for r in records} == {PRODUCT}
    # Counted every second from broker_auth's start: 0 before the grant (an earlier 10 s window
    # may end there), 1 since; the newest window shows the running grant.
    assert set(values(records)) <= {0.0, 1.0}
    newest = max(records, key=lambda r: r["_time"])
    assert float(newest["_value"]) == 1.0


def grant_events(stack: DashboardStack, records: Records) -> None:
    assert {"_time", "_value", "product", "event"} <= columns(records)
    counted = {(r["product"], r["event"]): 0.0 for r in records}
    for r in records:
        counted[(r["product"], r["event"])] += float(r["_value"])
    assert counted == {(PRODUCT, "granted"): 1.0}


def latest_reading(stack: DashboardStack, records: Records) -> None:
    assert columns(records) == {"_time", "_value", "device", "sensor"}
    (last,) = records
    assert (last["device"], last["sensor"]) == (DEVICE, SENSOR)
    assert float(last["_value"]) == READINGS[-1]
    assert round(last["_time"].timestamp() * 1000) == stack.readings[-1][0]


def raw_readings(stack: DashboardStack, records: Records) -> None:
    assert columns(records) == {"_time", "_value", "device", "sensor"}
    # Means per 10 s window of 40 readings 0.5 s apart (20 s): two or three windows.
    assert 2 <= len(records) <= 3
    assert all(min(READINGS) <= v <= max(READINGS) for v in values(records))
    assert {(r["device"], r["sensor"]) for r in records} == {(DEVICE, SENSOR)}


def moving_averages(stack: DashboardStack, records: Records) -> None:
    assert columns(records) == {"_time", "_value", "device", "sensor", "window"}
    assert {r["window"] for r in records} == {"1m", "30s"}  # the ingest tests' windows
    assert all(min(READINGS) <= v <= max(READINGS) for v in values(records))
    # Every reading is within the last 30 s: both windows end on the mean of all of them.
    final = {r["window"]: float(r["_value"]) for r in records}  # last per window, in time order
    mean = sum(READINGS) / len(READINGS)
    assert final["1m"] == pytest.approx(mean)


def readings_per_average(stack: DashboardStack, records: Records) -> None:
    assert columns(records) == {"_time", "_value", "device", "sensor", "window"}
    assert all(1 <= v <= len(READINGS) for v in values(records))
    assert max(values(records)) == len(READINGS)


MAY_BE_EMPTY = {"Unconfirmed payments seen"}
CHECKS: dict[tuple[str, str], Callable[[DashboardStack, Records], None]] = {
    ("business", "Confirmed revenue"): confirmed_revenue,
    ("business", "Unconfirmed payments seen"): unconfirmed_seen,
    ("business", "Active grants"): active_grants,
    ("business", "Access time sold"): access_time_sold,
    ("business", "Payments received by status"): payments_by_status,
    ("business", "Revenue per product"): revenue_per_product,
    ("business", "Active grants per product"): active_grants_per_product,
    ("business", "Grant events"): grant_events,
    ("device-readings", "Latest reading"): latest_reading,
    ("device-readings", "Raw readings"): raw_readings,
    ("device-readings", "Moving averages"): moving_averages,
    ("device-readings", "Readings per average"): readings_per_average,
}


def test_every_query_is_flux_run_here_or_promql_run_there() -> None:
    every = grafana.targets(DASHBOARDS)
    assert {t.datasource_uid for t in every} <= {INFLUX_UID, PROMETHEUS_UID}
    assert {(t.dashboard, t.panel) for t in FLUX_TARGETS} == set(CHECKS), (
        "a Flux panel without a check here, or a check without its panel"
    )


@pytest.mark.parametrize(
    "target", FLUX_TARGETS, ids=[f"{t.dashboard}:{t.panel}:{t.ref}" for t in FLUX_TARGETS]
)
def test_panel_query_returns_what_the_panel_shows(
    dashboard_stack: DashboardStack, target: grafana.Target
) -> None:
    # The dashboard variables as a seller would pick them: this device, and "All".
    for selected in ({"device": [DEVICE], "sensor": [SENSOR]}, {}):
        records = run(dashboard_stack, target, selected)
        assert records or target.panel in MAY_BE_EMPTY, f"{target.panel}: no rows"
        assert all(
            isinstance(r["_value"], int | float) and math.isfinite(r["_value"]) for r in records
        )
        CHECKS[(target.dashboard, target.panel)](dashboard_stack, records)


def test_variable_queries_list_what_was_written(dashboard_stack: DashboardStack) -> None:
    doc = dict(grafana.dashboards(DASHBOARDS))["device-readings"]
    queries = grafana.variable_queries(doc)
    assert set(queries) == {"device", "sensor", "window"}
    expected = {"device": {DEVICE}, "sensor": {SENSOR}, "window": {"1m", "30s"}}
    for name, query in queries.items():
        target = grafana.Target("device-readings", f"variable {name}", "", INFLUX_UID, query, name)
        listed = {str(r["_value"]) for r in run(dashboard_stack, target, {"device": [DEVICE]})}
        assert listed == expected[name], (name, listed)


def test_datasource_default_bucket_is_the_database_the_services_write() -> None:
    text = (REPO_ROOT / "dashboard/provisioning/datasources/datasources.yml").read_text()
    assert "defaultBucket: ${INFLUX_BUCKET}" in text
    example = (REPO_ROOT / ".env.example").read_text()
    assert f"INFLUX_BUCKET={influxdb.DATABASE}" in example


def test_no_query_names_a_bucket_of_its_own() -> None:
    # 1.x and 2.x name buckets differently (db/rp vs name): only v.defaultBucket is portable.
    for t in grafana.targets(DASHBOARDS):
        if t.datasource_uid == INFLUX_UID:
            assert "from(bucket: v.defaultBucket)" in t.query, t
            assert "buckets()" not in t.query, t
