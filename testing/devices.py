"""A device publishing readings to `live/<device>/<sensor>`, as tests and benchmarks need one.

One MQTT connection as `device.<id>` (built by `testing.mqtt.client`). `publish()` sends one
reading and records it with a key of the caller's (its timestamp, say); the broker's PUBACKs are
recorded too, so a test knows which readings the broker accepted (QoS 1) and can wait until none
is outstanding (`flush`). paho re-sends unacknowledged readings after a reconnect. `start()` calls
a step every `period` s from the device's own thread until `stop()`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import testing.mqtt
from broker_auth.broker import acl_model


class Device:
    def __init__(
        self,
        port: int,
        device_id: str,
        password: str,
        *,
        sensor: str = "power",
        qos: int = 1,
        tag: str = "dev",
        client_id: str | None = None,
        protocol: MQTTProtocolVersion = mqtt.MQTTv5,
        reconnect_delay: tuple[int, int] | None = None,
    ) -> None:
        self.device_id = device_id
        self.sensor = sensor
        self.qos = qos
        self.port = port
        self.published = 0  # readings paho took (rc success)
        self.client = testing.mqtt.client(
            acl_model.device_username(device_id),
            password,
            tag=tag,
            client_id=client_id,
            protocol=protocol,
        )
        # No paho in-flight cap: with one, paho rescans its whole queue on every PUBACK.
        self.client.max_inflight_messages_set(0)
        if reconnect_delay is not None:
            self.client.reconnect_delay_set(*reconnect_delay)
        self.client.on_publish = self._on_publish
        self._lock = threading.Lock()
        self._sent: list[tuple[int, int]] = []  # (mid, key)
        self._acks: dict[int, bool] = {}  # mid -> success
        self._infos: list[mqtt.MQTTMessageInfo] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- connection ----------------------------------------------------------------------------
    def connect(self, keepalive: int = 60) -> Device:
        """Connect now (raises if the broker cannot be reached) and start paho's loop."""
        self.client.connect("127.0.0.1", self.port, keepalive=keepalive)
        self.client.loop_start()
        return self

    def connect_async(self, keepalive: int = 60) -> Device:
        """Connect in the background, retrying (e.g. while the device is not projected yet)."""
        self.client.connect_async("127.0.0.1", self.port, keepalive=keepalive)
        self.client.loop_start()
        return self

    def close(self) -> None:
        self.stop()
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()

    # -- readings ------------------------------------------------------------------------------
    def topic(self, sensor: str | None = None) -> str:
        return f"live/{self.device_id}/{sensor or self.sensor}"

    def publish(
        self,
        payload: bytes | str,
        *,
        sensor: str | None = None,
        topic: str | None = None,
        key: int = 0,
        when_connected: bool = False,
    ) -> bool:
        """Send one reading (to `topic`, else live/<device>/<sensor>); False if paho refused it
        or, with `when_connected`, the device is not connected."""
        if when_connected and not self.client.is_connected():
            return False
        info = self.client.publish(topic or self.topic(sensor), payload, qos=self.qos)
        with self._lock:
            self._sent.append((info.mid, key))
            self._infos.append(info)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        self.published += 1
        return True

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until paho handed over every reading (QoS 1: until the broker acknowledged)."""
        with self._lock:
            infos, self._infos = self._infos, []
        for info in infos:
            info.wait_for_publish(timeout)

    def outstanding(self) -> int:
        with self._lock:
            return len(self._sent) - len(self._acks)

    def sent_keys(self) -> list[int]:
        with self._lock:
            return [key for _, key in self._sent]

    def accepted_keys(self) -> list[int]:
        """The keys of the readings the broker acknowledged with a success code."""
        with self._lock:
            return [key for mid, key in self._sent if self._acks.get(mid)]

    def _on_publish(
        self, _c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        with self._lock:
            self._acks[mid] = not reason.is_failure

    # -- a steady stream -----------------------------------------------------------------------
    def start(self, period: float, step: Callable[[int], object]) -> Device:
        """Call `step(n)` for n = 0, 1, ... every `period` s from the device's thread."""

        def run() -> None:
            n = 0
            while not self._stop.wait(period):
                step(n)
                n += 1

        self._thread = threading.Thread(target=run, daemon=True, name=f"device-{self.device_id}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
