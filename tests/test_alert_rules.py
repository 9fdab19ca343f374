"""The alert rules (prometheus/alerts.yml) checked and unit-tested by Prometheus's own promtool:
each alert fires on the condition it names and stays quiet on a healthy stack
(prometheus/alerts_test.yml). A rule reading a metric the code does not export, or an alert
without a firing test, fails here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import broker_auth.infra.metrics  # noqa: F401  (registers broker_auth's metrics)
import ingest.averager
import ingest.metrics  # noqa: F401  (registers the ingest worker's metrics)
from broker_metrics.exporter import metric_names as broker_metrics_names

PROMETHEUS = Path(__file__).resolve().parent.parent / "prometheus"
PROMTOOL = shutil.which("promtool")
# Series Prometheus itself makes (not exported by any of our processes).
PROMETHEUS_OWN = {"up"}
FUNCTIONS = {
    "min", "max", "sum", "by", "and", "or", "increase", "rate", "deriv", "histogram_quantile",
    "le", "result", "state", "matched", "instance", "job", "absent",
}  # fmt: skip


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None, (
        "promtool missing: scripts/bootstrap.sh installs Debian's prometheus"
    )
    return subprocess.run(
        [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def _rules() -> list[dict[str, str]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules_and_the_config() -> None:
    checked = _run("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = _run("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "alerts.yml" in config.stdout  # the compose config loads the rules


def test_every_alert_fires_in_promtools_unit_tests() -> None:
    tested = _run("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    cases = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    assert {rule["alert"] for rule in _rules()} == fired


def test_the_rules_read_only_metrics_the_code_exports() -> None:
    exported = {
        sample
        for family in REGISTRY.collect()
        for sample in _sample_names(family.name, family.type)
    } | broker_metrics_names()  # Mosquitto's $SYS figures, as iot-broker-metrics serves them
    used: set[str] = set()
    for rule in _rules():
        expr = re.sub(r'"[^"]*"', "", rule["expr"])  # label values are not names
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # nor range durations
        used |= {w for w in re.findall(r"[a-z_][a-z0-9_]*", expr) if w not in FUNCTIONS}
    assert used - exported - PROMETHEUS_OWN == set()
    assert "broker_auth_lease_held" in used and "ingest_store_errors_total" in used
    assert "mosquitto_broker_connected" in used


def _sample_names(name: str, kind: str) -> set[str]:
    if kind == "counter":
        return {f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def test_alertmanager_config_is_valid_and_prometheus_sends_to_it() -> None:
    """The compose stack's Alertmanager: amtool accepts its config, every alert reaches the
    seller's receiver, and Prometheus's config points at it."""
    amtool = shutil.which("amtool")
    assert amtool is not None, "amtool missing: scripts/bootstrap.sh installs Debian's"
    checked = subprocess.run(
        [amtool, "check-config", "alertmanager.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for labels in ("severity=critical", "severity=warning"):
        routed = subprocess.run(
            [amtool, "config", "routes", "test", "--config.file=alertmanager.yml", labels],
            cwd=PROMETHEUS,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert routed.stdout.strip() == "seller", routed.stdout + routed.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
