"""Grafana provisioning and Prometheus config: every query names only what the system writes.

Flux queries may name only the measurements, fields and tags of the team contract. PromQL may
name only metrics the services really expose: the ingest worker is started for real and its
/metrics page read; broker_auth's registry is rendered the way its /metrics does. Data source
and scrape URLs must point at compose services and their ports.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.compose.conftest import (
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    PROMETHEUS_CONFIG,
    REPO,
    IngestWorker,
    compose_config,
    dashboards,
    load_yaml_file,
)

# The team contract: measurement -> (tags, fields).
SCHEMA: dict[str, tuple[set[str], set[str]]] = {
    "reading": ({"device", "sensor"}, {"value"}),
    "reading_avg": ({"device", "sensor", "window"}, {"value", "count"}),
    "payment": ({"product", "status"}, {"amount_iota"}),
    "grant": ({"product", "event"}, {"seconds"}),
    "grants_active": ({"product"}, {"count"}),
}
# Tag values the contract fixes.
TAG_VALUES = {
    "status": {"unconfirmed", "confirmed"},
    "event": {"granted", "extended", "revoked"},
}
FLUX_COLUMNS = {"_measurement", "_field", "_value", "_time", "_start", "_stop"}
INFLUX_UID = "iot-influxdb"
PROMETHEUS_UID = "iot-prometheus"
# Series Prometheus itself attaches to every scrape target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
PROMQL_KEYWORDS |= {"and", "or", "unless", "offset", "inf", "nan"}


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, datasource uid, query text) of every panel target and template variable."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            uid = (target.get("datasource") or panel["datasource"])["uid"]
            text = target.get("query") or target.get("expr")
            yield f"{dashboard['title']} / {panel['title']}", uid, text
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            where = f"{dashboard['title']} / variable {variable['name']}"
            yield where, variable["datasource"]["uid"], text


def all_queries() -> list[tuple[str, str, str]]:
    return [q for d in dashboards().values() for q in queries(d)]


def flux_names(query: str) -> tuple[set[str], set[str], set[str], set[tuple[str, str]]]:
    """Measurements, fields, columns (tags) and (tag, literal value) pairs a Flux query names."""
    measurements = set(re.findall(r'r\._measurement\s*==\s*"([^"]+)"', query))
    fields = set(re.findall(r'r\._field\s*==\s*"([^"]+)"', query))
    # Any other way of naming them would slip past this check: refuse it.
    assert query.count("_measurement") == len(re.findall(r"r\._measurement\s*==", query))
    assert query.count("_field") == len(re.findall(r"r\._field\s*==", query))
    columns = set(re.findall(r"\br\.([A-Za-z_]\w*)", query))
    columns |= set(re.findall(r'\btag:\s*"([^"]+)"', query))
    for listed in re.findall(r"columns:\s*\[([^\]]*)\]", query):
        columns |= set(re.findall(r'"([^"]+)"', listed))
    values = set(re.findall(r'\br\.([a-z]\w*)\s*==\s*"([^"]+)"', query))
    return measurements, fields, columns - FLUX_COLUMNS, values


def promql_names(expr: str) -> tuple[set[str], set[str], set[str]]:
    """Metric names, grouping labels and `job` values a PromQL expression uses."""
    jobs = set(re.findall(r'job\s*=\s*"([^"]+)"', expr))
    labels: set[str] = set()
    for listed in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in listed.split(",") if label.strip()}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    metrics = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue  # a function or an aggregation
        metrics.add(word)
    return metrics, labels, jobs


def test_dashboards_are_provisioned_with_unique_uids_and_known_data_sources() -> None:
    found = dashboards()
    assert set(found) == {"device-readings.json", "ingest-health.json", "business.json"}
    uids = [d["uid"] for d in found.values()]
    assert len(set(uids)) == len(uids)
    titles = {d["title"] for d in found.values()}
    assert titles == {"Device readings", "Ingest health", "Business"}
    for where, uid, text in all_queries():
        assert uid in (INFLUX_UID, PROMETHEUS_UID), where
        assert text and text.strip(), where
    for dashboard in found.values():
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(set(ids)) == len(ids), dashboard["title"]


def test_flux_queries_name_only_what_the_system_writes() -> None:
    checked = 0
    for where, uid, query in all_queries():
        if uid != INFLUX_UID:
            continue
        measurements, fields, columns, values = flux_names(query)
        assert measurements, f"{where}: no measurement filter"
        assert measurements <= set(SCHEMA), f"{where}: unknown {measurements - set(SCHEMA)}"
        allowed_tags = set().union(*(SCHEMA[m][0] for m in measurements))
        allowed_fields = set().union(*(SCHEMA[m][1] for m in measurements))
        assert fields <= allowed_fields, f"{where}: unknown fields {fields - allowed_fields}"
        assert columns <= allowed_tags, f"{where}: unknown tags {columns - allowed_tags}"
        for tag, value in values:
            assert value in TAG_VALUES.get(tag, {value}), f"{where}: {tag} == {value!r}"
        # The bucket comes from the data source (INFLUX_BUCKET), never written in a query.
        assert "v.defaultBucket" in query and "bucket:" in query, where
        assert len(re.findall(r"bucket:", query)) == query.count("bucket: v.defaultBucket")
        checked += 1
    assert checked >= 10


def test_device_readings_dashboard_has_the_promised_variables_and_panels() -> None:
    dashboard = dashboards()["device-readings.json"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"device", "sensor"} <= set(variables)
    for name in ("device", "sensor"):
        assert "schema.tagValues" in variables[name]["query"]
        assert f'tag: "{name}"' in variables[name]["query"]
    panel_queries = [q for _, _, q in queries(dashboard)]
    assert any('"reading" and r._field == "value"' in q for q in panel_queries)
    assert any('"reading_avg" and r._field == "value"' in q for q in panel_queries)
    for query in panel_queries:
        if "schema.tagValues" not in query:
            assert "${device:regex}" in query and "${sensor:regex}" in query


def test_business_dashboard_covers_payments_grants_and_revenue() -> None:
    dashboard = dashboards()["business.json"]
    texts = [q for _, _, q in queries(dashboard)]
    assert any('"payment"' in q and 'group(columns: ["status"])' in q for q in texts)
    assert any('"grants_active"' in q for q in texts)
    assert any('"payment"' in q and 'group(columns: ["product"])' in q for q in texts)


def exposed(metrics_text: str) -> dict[str, set[str]]:
    """Metric names a scrape of this page yields -> their label names."""
    names: dict[str, set[str]] = {}
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
            for suffix in ("", *suffixes.get(kind, ())):
                names.setdefault(name + suffix, set())
        elif line and not line.startswith("#"):
            match = re.match(r"([A-Za-z_:][\w:]*)(\{([^}]*)\})?", line)
            assert match, line
            labels = set(re.findall(r"([A-Za-z_]\w*)=", match.group(3) or ""))
            names.setdefault(match.group(1), set()).update(labels)
    return names


def broker_auth_metrics_text() -> str:
    """What broker_auth's GET /metrics serves: the default registry with its metrics module.

    (Running broker_auth itself needs MongoDB, the broker and a node; its endpoint is just
    `generate_latest()` of this registry.)
    """
    importlib.import_module("broker_auth.infra.metrics")
    code = (
        "import sys, broker_auth.infra.metrics; from prometheus_client import generate_latest; "
        "sys.stdout.write(generate_latest().decode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def test_prometheus_queries_name_only_metrics_the_services_expose(
    ingest_worker: IngestWorker,
) -> None:
    ingest = exposed(ingest_worker.metrics_text())
    broker_auth = exposed(broker_auth_metrics_text())
    available = {**broker_auth, **ingest}
    jobs = {job["job_name"] for job in load_yaml_file(PROMETHEUS_CONFIG)["scrape_configs"]}
    used: set[str] = set()
    for where, uid, expr in all_queries():
        if uid != PROMETHEUS_UID:
            continue
        metrics, labels, expr_jobs = promql_names(expr)
        assert metrics, f"{where}: no metric in {expr!r}"
        unknown = metrics - set(available) - PROMETHEUS_SYNTHETIC
        assert not unknown, f"{where}: no service exposes {sorted(unknown)}"
        # A metric is looked for in the job that exposes it.
        for metric in metrics - PROMETHEUS_SYNTHETIC:
            owner = "ingest" if metric in ingest else "broker_auth"
            assert metric.startswith(f"{owner}_"), (where, metric)
        known_labels = {"le", "job", "instance"}.union(*(available.get(m, set()) for m in metrics))
        assert labels <= known_labels, f"{where}: unknown labels {labels - known_labels}"
        assert expr_jobs <= jobs, f"{where}: unknown job {expr_jobs - jobs}"
        used |= metrics
    # The names the brief promised the lead are all charted.
    assert {
        "ingest_readings_received_total",
        "ingest_readings_stored_total",
        "ingest_readings_rejected_total",
        "ingest_store_write_seconds_bucket",
        "ingest_buffer_depth",
    } <= used
    assert "reason" in available["ingest_readings_rejected_total"]


def test_promql_parser_finds_metrics_labels_and_jobs() -> None:
    metrics, labels, jobs = promql_names(
        'histogram_quantile(0.95, sum by (le) (rate(x_bucket{job="ingest"}[$__rate_interval])))'
        " / on(instance) group_left y_total"
    )
    assert (metrics, labels, jobs) == ({"x_bucket", "y_total"}, {"le"}, {"ingest"})


def service_ports(service: dict[str, Any]) -> set[int]:
    """Ports a compose service listens on: published targets and its own *_PORT settings."""
    ports = set()
    for port in service.get("ports", []):
        target = port["target"] if isinstance(port, dict) else str(port).split(":")[-1]
        ports.add(int(str(target).split("/")[0]))
    for key, value in (service.get("environment") or {}).items():
        if key.endswith("_PORT") and not key.startswith(("MQTT_", "HOST_")):
            ports.add(int(value))
    return ports


def assert_points_at_service(url: str, where: str) -> None:
    parsed = urllib.parse.urlsplit(url if "//" in url else f"http://{url}")
    services = compose_config()["services"]
    assert parsed.hostname in services, f"{where}: {parsed.hostname} is not a compose service"
    assert parsed.port in service_ports(services[parsed.hostname]), f"{where}: port {parsed.port}"


def test_datasource_urls_point_at_compose_services() -> None:
    grafana = compose_config()["services"]["grafana"]
    env = grafana["environment"]
    datasources = load_yaml_file(DATASOURCES)["datasources"]
    text = DATASOURCES.read_text()
    # Every variable the provisioning file expands is given to the Grafana container.
    for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", text):
        assert name in env, f"datasources.yml uses ${name}, not set for grafana"
    by_uid = {d["uid"]: d for d in datasources}
    assert set(by_uid) == {INFLUX_UID, PROMETHEUS_UID}

    def expand(value: str) -> str:
        return re.sub(r"\$\{?([A-Z][A-Z0-9_]*)\}?", lambda m: str(env[m.group(1)]), value)

    influx = by_uid[INFLUX_UID]
    assert influx["type"] == "influxdb" and influx["jsonData"]["version"] == "Flux"
    assert expand(influx["jsonData"]["organization"]) == env["INFLUX_ORG"]
    assert expand(influx["jsonData"]["defaultBucket"]) == env["INFLUX_BUCKET"]
    assert expand(influx["secureJsonData"]["token"]) == env["INFLUX_TOKEN"]
    assert_points_at_service(expand(influx["url"]), "InfluxDB data source")
    assert expand(influx["url"]) == "http://influxdb:8086"
    prometheus = by_uid[PROMETHEUS_UID]
    assert prometheus["type"] == "prometheus"
    assert_points_at_service(expand(prometheus["url"]), "Prometheus data source")
    # Grafana, the project services and the data source agree on the InfluxDB names.
    for service in ("broker_auth", "ingest"):
        project_env = compose_config()["services"][service]["environment"]
        for key in ("INFLUX_URL", "INFLUX_ORG", "INFLUX_BUCKET", "INFLUX_TOKEN"):
            assert project_env[key] == env[key], (service, key)


def test_prometheus_scrapes_compose_services_on_their_metrics_ports() -> None:
    config = load_yaml_file(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"broker_auth", "ingest", "averager"} <= set(jobs)
    for name, port in (("broker_auth", 8000), ("ingest", 9102), ("averager", 9101)):
        job = jobs[name]
        # Scaled services are found by DNS (every replica's address), the others are listed.
        targets = [f"{d['names'][0]}:{d['port']}" for d in job.get("dns_sd_configs", [])] + [
            t for sc in job.get("static_configs", []) for t in sc["targets"]
        ]
        assert targets == [f"{name}:{port}"]
        for target in targets:
            assert_points_at_service(target, f"scrape job {name}")
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    providers = load_yaml_file(DASHBOARD_PROVIDERS)["providers"]
    grafana = compose_config()["services"]["grafana"]
    mounts = {
        v.split(":")[1]: Path(v.split(":")[0]) for v in grafana["volumes"] if v.startswith("/")
    }
    for provider in providers:
        assert provider["type"] == "file"
        source = mounts[provider["options"]["path"]]
        assert source == REPO / "dashboard" / "dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, _, file_name = home.rpartition("/")
    assert (mounts[folder] / file_name).exists()
    assert mounts["/etc/grafana/provisioning/datasources"] == DATASOURCES.parent
    assert mounts["/etc/grafana/provisioning/dashboards"] == DASHBOARD_PROVIDERS.parent
