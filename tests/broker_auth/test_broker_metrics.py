"""Mosquitto's `$SYS` figures in Prometheus: broker_auth makes the exporter's client, the
exporter (`iot-broker-metrics`) serves the broker's figures, and Prometheus fires BrokerDown
when the broker stops (and stops firing when it is back).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from broker_auth.broker import acl_model
from stack.mqtt_probe import MqttProbe
from testing import procs
from testing.broker_auth import CLOSED_PORT_URL, start_replica
from testing.procs import wait_for
from testing.prometheus import start_prometheus
from testing.scrape import http_text, scrape_metrics
from tests.broker_auth.conftest import AuthStackFactory

pytestmark = pytest.mark.timeout(420)
REFUSED = "mosquitto_exporter_login_refused"


def metrics_or_none(url: str) -> dict[str, float] | None:
    try:
        return scrape_metrics(url, timeout=2)
    except OSError:
        return None


def exporter_process(workdir: Path, mqtt_port: int, password: str, port: int) -> procs.Proc:
    """`iot-broker-metrics` on a broker, not started yet."""
    return procs.python_service(
        "broker-metrics",
        "broker_metrics",
        workdir,
        env={
            "MQTT_PORT": str(mqtt_port),
            "BROKER_METRICS_MQTT_PASSWORD": password,
            "BROKER_METRICS_PORT": str(port),
        },
    )


def with_clients(url: str, at_least: int) -> dict[str, float] | None:
    """The exporter's figures once they show `at_least` connected clients."""
    found = metrics_or_none(url)
    if found is None or found.get("mosquitto_clients_connected", 0) < at_least:
        return None
    return found


def test_sys_figures_reach_prometheus_and_brokerdown_fires(
    auth_stack_factory: AuthStackFactory, tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(18)
    stack = auth_stack_factory(
        "sys-exporter", node_url=CLOSED_PORT_URL, BROKER_METRICS_MQTT_PASSWORD=password
    )
    # broker_auth made the exporter's client, with the $SYS role and nothing else.
    roles = wait_for(lambda: stack.client_roles(acl_model.METRICS_USERNAME), 30, "svc.metrics")
    assert roles == {acl_model.ROLE_METRICS}
    # A wrong password: the broker answers but refuses the login, and the exporter says so
    # (BrokerDown must not claim the broker is down then).
    wrong_port = procs.free_port()
    wrong_url = f"http://127.0.0.1:{wrong_port}/metrics"
    wrong = exporter_process(tmp_path / "wrong", stack.broker.port, "not-the-password", wrong_port)
    wrong.ready = lambda: (metrics_or_none(wrong_url) or {}).get(REFUSED) == 1
    wrong.start()
    assert (metrics_or_none(wrong_url) or {}).get("mosquitto_broker_connected") == 0
    wrong.stop()

    port = procs.free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    exporter = exporter_process(tmp_path / "exporter", stack.broker.port, password, port)
    exporter.ready = lambda: (metrics_or_none(url) or {}).get("mosquitto_broker_connected") == 1
    exporter.start()
    prometheus = None
    try:
        assert (metrics_or_none(url) or {}).get(REFUSED) == 0
        # Mosquitto's figures, as it publishes them every sys_interval (10 s): broker_auth's
        # clients and the exporter are connected.
        first = wait_for(
            lambda: with_clients(url, 2),
            30,
            "$SYS figures with the connected clients",
            0.5,
        )
        assert first["mosquitto_uptime_seconds"] > 0
        assert "mosquitto_messages_received_total" in first  # a counter, named as one
        assert "# TYPE mosquitto_clients_connected gauge" in http_text(url)

        # Published readings show in the totals at the next $SYS round.
        device_password = stack.create_device("sys-plug")
        device = MqttProbe(stack.broker.port, "device.sys-plug", device_password)
        assert device.connect()
        for i in range(500):
            device.publish("live/sys-plug/power", f'{{"value": {i}}}'.encode(), qos=1)
        device.close()
        received = "mosquitto_publish_messages_received_total"
        wait_for(
            lambda: (metrics_or_none(url) or {}).get(received, 0) >= first.get(received, 0) + 500,
            30,
            "500 more publishes counted",
            0.5,
        )

        # The exporter's login reads $SYS only: no live data, no publishing.
        spy = MqttProbe(stack.broker.port, acl_model.METRICS_USERNAME, password)
        assert spy.connect()
        assert not spy.subscribe("live/#")
        spy.close()

        prometheus = start_prometheus(
            tmp_path / "prometheus", {"mosquitto": f"http://127.0.0.1:{port}"}
        )
        stack.broker.proc.stop()
        wait_for(
            lambda: (metrics_or_none(url) or {}).get("mosquitto_broker_connected") == 0,
            15,
            "the exporter to see the broker gone",
        )
        wait_for(lambda: prometheus.alerts().get("BrokerDown") == "firing", 120, "firing", 1)
        stack.broker.proc.start()
        wait_for(
            lambda: (metrics_or_none(url) or {}).get("mosquitto_broker_connected") == 1,
            30,
            "the exporter back on the broker",
        )
        wait_for(lambda: "BrokerDown" not in prometheus.alerts(), 30, "BrokerDown resolved", 1)
    finally:
        if prometheus is not None:
            prometheus.proc.stop()
        exporter.stop()


def test_without_the_exporter_its_login_is_removed(
    auth_stack_factory: AuthStackFactory, tmp_path: Path
) -> None:
    """A seller who stops running the exporter takes BROKER_METRICS_MQTT_PASSWORD away: its
    login must not stay on the broker with the old password (least privilege: a leaked copy
    of an old .env would still read the broker's figures)."""
    password = secrets.token_urlsafe(18)
    stack = auth_stack_factory(
        "sys-exporter-gone", node_url=CLOSED_PORT_URL, BROKER_METRICS_MQTT_PASSWORD=password
    )
    wait_for(lambda: stack.client_roles(acl_model.METRICS_USERNAME), 30, "svc.metrics")
    stack.proc.stop()
    # Unset: an empty value is how an env file says it (compose passes the variable through).
    without = start_replica(stack, tmp_path / "without", BROKER_METRICS_MQTT_PASSWORD="")
    try:
        wait_for(
            lambda: stack.control().get_client(acl_model.METRICS_USERNAME) is None,
            30,
            "svc.metrics removed",
        )
        assert not MqttProbe(stack.broker.port, acl_model.METRICS_USERNAME, password).connect()
    finally:
        without.close()
