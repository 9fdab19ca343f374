"""MQTT for tests and benchmarks: one way to make a paho client, and waiting for live access.

`client()` is the one place a raw paho client is built (MQTT 5, callback API 2, an id in the
user's namespace); `stack.mqtt_probe.MqttProbe` is the synchronous buyer's client built on the
same rules, used by `make demo` as well.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stack.mqtt_probe import MqttProbe


def client(
    username: str | None = None,
    password: str | None = None,
    *,
    client_id: str | None = None,
    tag: str = "test",
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    transport: Literal["tcp", "websockets", "unix"] = "tcp",
    clean_session: bool | None = None,
    reconnect_on_failure: bool = True,
) -> mqtt.Client:
    """A paho client (callback API 2, MQTT 5 unless `protocol`), not connected yet.

    Its id is `client_id` when given ("": the broker assigns one), else `<tag>-<random>` in the
    user's namespace (`<username>:<tag>-<random>`: the broker reserves such ids to that user).
    """
    if client_id is None:
        tail = f"{tag}-{uuid.uuid4().hex[:8]}"
        client_id = tail if username is None else f"{username}:{tail}"
    made = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        transport=transport,
        clean_session=clean_session,
        reconnect_on_failure=reconnect_on_failure,
    )
    if username is not None:
        made.username_pw_set(username, password)
    return made


def session_expiry(seconds: int, packet: int = PacketTypes.CONNECT) -> Properties:
    """MQTT 5 properties of a CONNECT (or DISCONNECT) asking the broker to keep the session
    `seconds` after the connection ends (0: end it with the connection)."""
    props = Properties(packet)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = seconds
    return props


def subscribe_on_connect(client: mqtt.Client, topic: str, qos: int) -> threading.Event:
    """Subscribe `client` to `topic` at every (re)connection; the event is set at each SUBACK."""
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=qos)
    client.on_subscribe = lambda *_: subscribed.set()
    return subscribed


@dataclass
class Access:
    probe: MqttProbe  # connected, subscribed to the topic
    granted_at: float  # wall time the SUBACK granting the topic arrived
    attempts: int
    last_refused_at: float | None  # the attempt before: access began between the two


def wait_for_access(
    port: int,
    username: str,
    password: str,
    topic: str,
    timeout: float = 60.0,
    period: float = 0.02,
) -> Access:
    """Connect and SUBSCRIBE to `topic` every `period` s until it is granted.

    A fresh connection per attempt, as a buyer's client would after a refusal: the grant itself
    disconnects the buyer's connected clients (dynamic security kicks a client whose roles
    change), so an old connection could be mid-kick; such an attempt ends in ConnectionLostError
    and the next one follows. The short SUBACK timeout bounds what a slow attempt costs (a SUBACK
    comes in milliseconds; a late one only means one more attempt). Refused credentials never
    turn into access: they raise PermissionError at once.
    """
    deadline = time.monotonic() + timeout
    attempts = 0
    last_refused: float | None = None
    while time.monotonic() < deadline:
        attempts += 1
        probe = MqttProbe(port, username, password)
        try:
            # A CONNACK comes in milliseconds; a connection kicked mid-CONNECT (the grant's role
            # change) would wait out paho's 1 s reconnect here: a fresh attempt is quicker.
            if not probe.connect(timeout=0.5):
                raise PermissionError(f"{username}: the broker refused the credentials")
            if probe.subscribe(topic, timeout=0.25):
                return Access(probe, time.time(), attempts, last_refused)
            last_refused = time.time()
        except PermissionError:
            raise
        except (TimeoutError, OSError):
            pass  # kicked mid-attempt (ConnectionLostError) or a slow broker: try again
        # Closing a kicked probe waits out paho's reconnect sleep (up to 1 s): not our time.
        threading.Thread(target=probe.close, daemon=True).start()
        time.sleep(period)
    raise TimeoutError(f"{username}: {topic} not granted within {timeout:.0f} s")
