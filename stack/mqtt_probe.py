"""A small synchronous MQTT client for the demo (`make demo`), tests and benchmarks.

It answers the questions a buyer asks of the broker: may I connect, is this subscription
granted, which messages arrive, was I disconnected.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode


class ConnectionLostError(ConnectionError):
    """The broker closed the connection before answering. Not a refusal: Mosquitto's dynamic
    security disconnects a client whose roles change (a grant or its end), so callers that
    wait for a grant try again on a fresh or reconnected connection."""


# The broker grants the free averages (`avg` and below) at QoS 0 only to every client but
# services (mosquitto/plugin/session_ownership.c, plugin_opt_free_prefix / free_max_qos).
FREE_PREFIX = "avg"
SERVICE_PREFIX = "svc."


def reaches_free_area(topic_filter: str, prefix: str = FREE_PREFIX) -> bool:
    """Can `topic_filter` match `prefix` or a topic under it (what `<prefix>/#` matches)?
    `$share/<group>/<filter>` is judged by <filter>; as the plugin decides."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2] if topic_filter.count("/") >= 2 else ""
    levels, wanted = topic_filter.split("/"), prefix.rstrip("/").split("/")
    for i, want in enumerate(wanted):
        if i >= len(levels):
            return False
        level = levels[i]
        dollar = i == 0 and want.startswith("$")
        if level == "#":
            return not dollar
        if (level == "+" and dollar) or (level != "+" and level != want):
            return False
    return True


def default_qos(username: str | None, topic_filter: str) -> int:
    """QoS 1, but 0 where the broker grants no more: anonymous clients, and the free averages
    for clients that are not services."""
    if username is None:
        return 0
    if not username.startswith(SERVICE_PREFIX) and reaches_free_area(topic_filter):
        return 0
    return 1


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    received_at: float


@dataclass
class MqttProbe:
    port: int
    username: str | None = None
    password: str | None = None
    host: str = "127.0.0.1"
    # Empty: a random id in the user's namespace (`<username>:probe-...`), or `probe-...`.
    client_id: str = ""
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    disconnects: int = 0

    def __post_init__(self) -> None:
        if not self.client_id:
            tail = f"probe-{uuid.uuid4().hex[:12]}"
            self.client_id = tail if self.username is None else f"{self.username}:{tail}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        if self.username is not None:
            self._client.username_pw_set(self.username, self.password)
        self._connected = threading.Event()
        self._connack: ReasonCode | None = None
        self._suback: dict[int, list[ReasonCode]] = {}
        self._suback_ready = threading.Condition()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # -- callbacks (paho's network thread) ---------------------------------------------------
    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self._connack = rc
        if not rc.is_failure:
            self._connected.set()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, _rc: ReasonCode, _p: Properties | None
    ) -> None:
        self._connected.clear()
        with self._suback_ready:  # wakes a subscribe() waiting for a SUBACK that will not come
            self.disconnects += 1
            self._suback_ready.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(
            Message(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
        )

    def _on_subscribe(
        self,
        _c: mqtt.Client,
        _u: object,
        mid: int,
        codes: list[ReasonCode],
        _p: Properties | None,
    ) -> None:
        with self._suback_ready:
            self._suback[mid] = codes
            self._suback_ready.notify_all()

    # -- API ---------------------------------------------------------------------------------
    def connect(self, timeout: float = 5.0) -> bool:
        """Connect and start the network loop; False if the broker refused the credentials."""
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._connected.wait(0.05):
                return True
            if self._connack is not None and self._connack.is_failure:
                self._client.loop_stop()
                return False
        raise TimeoutError(f"no CONNACK from 127.0.0.1:{self.port} within {timeout}s")

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def subscribe(self, topic: str, qos: int | None = None, timeout: float = 5.0) -> bool:
        """True if the broker granted the subscription, False if it refused it.

        QoS 1 by default, 0 for an anonymous client and for the free averages unless a service
        (the broker grants those QoS 0 only; see default_qos).
        Raises ConnectionLostError when there is no connection or it drops before the SUBACK.
        """
        with self._suback_ready:
            generation = self.disconnects
        if qos is None:
            qos = default_qos(self.username, topic)
        result, mid = self._client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionLostError(f"cannot subscribe to {topic}: {mqtt.error_string(result)}")
        with self._suback_ready:
            answered = self._suback_ready.wait_for(
                lambda: mid in self._suback or self.disconnects != generation, timeout
            )
            if not answered:
                raise TimeoutError(f"no SUBACK for {topic}")
            if mid not in self._suback:
                raise ConnectionLostError(f"disconnected before the SUBACK for {topic}")
            codes = self._suback.pop(mid)
        return all(not c.is_failure for c in codes)

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def next_message(self, timeout: float) -> Message | None:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[Message]:
        out: list[Message] = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
