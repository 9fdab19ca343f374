"""What broker_auth projects into Mosquitto, checked with real MQTT clients.

Anonymous clients, buyers and devices get exactly their rules; reconciliation repairs drift
(deleted clients and roles, stray roles, orphan devices) and never touches service accounts;
Mosquitto restarts keep every rule; a broker outage fails account creation cleanly.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from stack.mqtt_probe import MqttProbe
from testing.broker_auth import AuthStack
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory, Publisher

PASSWORD = "buyer-password-1"


@pytest.fixture(scope="module")
def stack(auth_stack_factory: AuthStackFactory) -> AuthStack:
    s = auth_stack_factory(
        "projection",
        SEED_DEMO="true",
        DEMO_DEVICE_PASSWORD="demo-device-pw-123",
        RECONCILE_INTERVAL_S="1",
    )
    wait_for(lambda: s.http().get("/api/products").json(), 15, "the demo seed")
    return s


@pytest.fixture(scope="module")
def device(stack: AuthStack) -> tuple[str, str]:
    return "dev-p", stack.create_device("dev-p")


@pytest.fixture(scope="module")
def buyer(stack: AuthStack) -> tuple[str, str]:
    stack.register("buyer-p", PASSWORD)
    return "buyer-p", PASSWORD


def ingest(stack: AuthStack) -> MqttProbe:
    """The ingest service account: reads everything under live/."""
    probe = MqttProbe(stack.broker.port, "svc.ingest", stack.broker.ingest_password)
    assert probe.connect()
    assert probe.subscribe("live/#")
    return probe


def connected(
    stack: AuthStack, username: str | None = None, password: str | None = None
) -> MqttProbe:
    probe = stack.probe(username, password)
    assert probe.connect(), f"{username} could not connect"
    return probe


def test_anonymous_reads_averages_only(stack: AuthStack) -> None:
    anon = connected(stack)
    try:
        assert anon.subscribe("avg/#")
        assert not anon.subscribe("live/#")
        assert not anon.subscribe("live/plug-1/power")
        assert not anon.subscribe("#")
        assert not anon.subscribe("$CONTROL/#")
        assert not anon.subscribe("$CONTROL/dynamic-security/v1/response")
        # Publishing a control command is silently dropped: no client gets created.
        anon.publish(
            "$CONTROL/dynamic-security/v1",
            json.dumps(
                {"commands": [{"command": "createClient", "username": "evil", "password": "x"}]}
            ),
        )
        time.sleep(0.3)
        assert stack.control().get_client("evil") is None
    finally:
        anon.close()


def test_buyer_client_matches_the_account(stack: AuthStack, buyer: tuple[str, str]) -> None:
    username, password = buyer
    assert stack.probe(username, "wrong-password").connect() is False
    # MQTT takes the password broker_auth generated, never the login password.
    assert stack.probe(username, password).connect() is False
    client = connected(stack, username, stack.mqtt_passwords[username])
    try:
        assert client.subscribe("avg/#")
        assert not client.subscribe("live/plug-1/#")  # no grant yet
        assert not client.subscribe("$CONTROL/#")
    finally:
        client.close()
    groups = stack.control().get_client(username)
    assert groups is not None
    assert {g["groupname"] for g in groups["groups"]} == {"buyers"}


def test_device_publishes_only_its_own_topics(stack: AuthStack, device: tuple[str, str]) -> None:
    device_id, password = device
    reader = ingest(stack)
    try:
        dev = connected(stack, f"device.{device_id}", password)
        dev.publish(f"live/{device_id}/power", "1")
        dev.publish(f"live/{device_id}/a/b", "2")
        assert not dev.subscribe("live/#")
        assert not dev.subscribe(f"live/{device_id}/#")
        assert not dev.subscribe("$CONTROL/#")
        dev.close()
        # Mosquitto 2.0 disconnects an MQTT 5 client whose publish is denied: one connection
        # per forbidden topic.
        for topic in (
            "live/plug-1/power",
            f"live/{device_id}x/power",
            "avg/1m/dev-p/power",
            "$CONTROL/dynamic-security/v1",
            "other",
        ):
            dev = connected(stack, f"device.{device_id}", password)
            dev._client.publish(topic, "forbidden", qos=0)
            wait_for(lambda p=dev: p.disconnects > 0, 5, f"the broker to refuse {topic}")  # type: ignore[misc]
            dev.close()
        got = []
        while (m := reader.next_message(1.0)) is not None:
            got.append((m.topic, m.payload))
        assert got == [(f"live/{device_id}/power", b"1"), (f"live/{device_id}/a/b", b"2")]
    finally:
        reader.close()
    assert stack.probe(f"device.{device_id}", "wrong-password-123").connect() is False


def test_demo_device_uses_the_configured_password(stack: AuthStack) -> None:
    dev = connected(stack, "device.plug-1", "demo-device-pw-123")
    dev.close()


def test_a_buyer_whose_client_went_missing_gets_it_back_with_a_new_mqtt_password(
    stack: AuthStack, buyer: tuple[str, str]
) -> None:
    username, password = buyer
    old = stack.mqtt_passwords[username]
    stack.control().delete_client(username)
    assert stack.probe(username, old).connect() is False
    # The periodic reconciliation (1 s here) notices the missing client.
    wait_for(
        lambda: "is missing in Mosquitto" in stack.proc.log_text(), 10, "the missing client", 0.3
    )
    r = httpx.post(f"{stack.api_url}/api/account/mqtt-password", auth=(username, password))
    assert r.status_code == 201, r.text
    new = r.json()["mqtt_password"]
    stack.mqtt_passwords[username] = new
    assert new not in (old, password)
    connected(stack, username, new).close()
    assert stack.probe(username, old).connect() is False
    assert stack.client_roles(username) == {f"notify.{username}"}


def test_reconciliation_repairs_drift(
    stack: AuthStack, device: tuple[str, str], buyer: tuple[str, str]
) -> None:
    control = stack.control()
    device_id, _ = device
    username, _ = buyer
    # Drift: an unknown device client, a product role without a grant, a lost device role, a
    # deleted product role and a lost notification role. A service account with a product role
    # is left alone.
    assert control.create_client("device.ghost", "ghost-password-1", roles=("device.dev-p",))
    control.add_client_role(username, "product.plug-1-live")
    control.remove_client_role(f"device.{device_id}", f"device.{device_id}")
    assert control.create_client("svc.other", "other-password-1")
    control.add_client_role("svc.other", "product.plug-1-live")
    control.remove_client_role("device.plug-1", "device.plug-1")
    control.delete_role("product.plug-1-live")
    control.remove_client_role(username, f"notify.{username}")

    def repaired() -> bool:
        return (
            control.get_client("device.ghost") is None
            and stack.client_roles(username) == {f"notify.{username}"}  # its notifications
            and stack.client_roles(f"device.{device_id}") == {f"device.{device_id}"}
            and stack.client_roles("device.plug-1") == {"device.plug-1"}
            and control.call(
                {"command": "getRole", "rolename": "product.plug-1-live"},
                tolerate=("Role not found",),
            ).error
            is None
        )

    wait_for(repaired, 10, "reconciliation", interval=0.2)
    assert stack.client_roles("svc.ingest") == {"svc-ingest"}
    assert stack.client_roles("svc.broker-admin") == {"svc-admin"}
    # svc.* clients keep whatever they were given (the product role was deleted with the role
    # itself, so re-add it and check it survives a reconciliation).
    control.add_client_role("svc.other", "product.plug-1-live")
    time.sleep(2.5)
    assert stack.client_roles("svc.other") == {"product.plug-1-live"}
    control.delete_client("svc.other")


def test_mosquitto_restart_keeps_every_rule(
    stack: AuthStack, device: tuple[str, str], buyer: tuple[str, str]
) -> None:
    stack.broker.proc.restart()
    wait_for(lambda: (stack.health() or {}).get("broker") == "ok", 15, "broker_auth to reconnect")
    username, _ = buyer
    device_id, device_password = device
    client = connected(stack, username, stack.mqtt_passwords[username])
    anon = connected(stack)
    publisher = Publisher(stack.broker.port, device_id, device_password, period=0.05).start()
    reader = ingest(stack)
    try:
        assert client.subscribe("avg/#") and not client.subscribe("live/#")
        assert anon.subscribe("avg/#") and not anon.subscribe("live/#")
        message = reader.next_message(3)
        assert message is not None and message.topic == f"live/{device_id}/power"
        assert not publisher.probe.subscribe("live/#")
    finally:
        for p in (client, anon, reader):
            p.close()
        publisher.stop()


def test_broker_outage_fails_account_creation_cleanly(stack: AuthStack) -> None:
    stack.broker.proc.stop()
    try:
        wait_for(lambda: (stack.health() or {}).get("broker") == "down", 10, "broker down")
        health = httpx.get(f"{stack.api_url}/healthz", timeout=5)
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        r = httpx.post(
            f"{stack.api_url}/api/accounts",
            json={"username": "late-buyer", "password": PASSWORD},
            timeout=15,
        )
        assert r.status_code == 503, r.text
        assert "detail" in r.json()
        # Reads that need only MongoDB keep working.
        assert httpx.get(f"{stack.api_url}/api/products", timeout=5).status_code == 200
    finally:
        stack.broker.proc.start()
    wait_for(lambda: (stack.health() or {}).get("broker") == "ok", 15, "broker_auth to reconnect")
    # The failed attempt left nothing behind: the same username can register now.
    connected(stack, "late-buyer", stack.register("late-buyer", PASSWORD)).close()
