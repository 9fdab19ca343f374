"""The local broker's TLS listener (generated CA) and WebSocket listener, as clients use them."""

from __future__ import annotations

import ssl
import threading

import paho.mqtt.client as mqtt
import pytest

import testing.mqtt
from testing import procs


def _connect(client: mqtt.Client, port: int) -> bool:
    """True once the broker accepted the connection (CONNACK success)."""
    accepted = threading.Event()
    client.on_connect = lambda _c, _u, _f, rc, _p: accepted.set() if not rc.is_failure else None
    client.connect("localhost", port, keepalive=10)
    client.loop_start()
    try:
        return accepted.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_tls_client_with_the_generated_ca_connects(mosquitto: procs.MosquittoHandle) -> None:
    client = testing.mqtt.client(client_id="")
    client.tls_set(ca_certs=str(mosquitto.tls.ca_cert))
    assert _connect(client, mosquitto.tls_port)


def test_tls_client_without_the_ca_is_refused(mosquitto: procs.MosquittoHandle) -> None:
    client = testing.mqtt.client(client_id="")
    client.tls_set()  # the system's trust store: our local CA is not in it
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("localhost", mosquitto.tls_port, keepalive=10)


def test_websocket_listener_serves_mqtt(mosquitto: procs.MosquittoHandle) -> None:
    client = testing.mqtt.client(client_id="", transport="websockets")
    assert _connect(client, mosquitto.ws_port)
