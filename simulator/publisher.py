"""One MQTT connection that publishes readings of one or many simulated devices (QoS 1).

Devices own their retries: a reading stays in paho's outgoing queue until the broker's PUBACK,
and paho re-sends every unacknowledged reading after a reconnect. That queue is bounded by
`max_queue`: when it is full (the broker is unreachable or slow), sampling pauses until the
broker acknowledges again, so memory stays bounded and nothing sampled is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger("simulator")


@dataclass
class Counts:
    sent: int = 0  # handed to paho
    acked: int = 0  # PUBACK with success
    refused: int = 0  # PUBACK with an error reason (e.g. not authorized for that topic)
    # With `tally_seconds`: readings acknowledged, by the whole second of their `ts`.
    acked_by_second: Counter[int] = field(default_factory=Counter)

    @property
    def outstanding(self) -> int:
        return self.sent - self.acked - self.refused


class Publisher:
    def __init__(
        self,
        host: str,
        port: int,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
        max_queue: int = 5000,
        keepalive: int = 30,
        tally_seconds: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.max_queue = max_queue
        self.counts = Counts()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._closing = False
        self._tally = tally_seconds
        # Message id -> second of its reading, until acknowledged. A PUBACK may beat `publish()`
        # back from paho (its network thread), so an id acknowledged first waits in `_early`.
        self._second_of: dict[int, int] = {}
        self._early: dict[int, bool] = {}
        # The broker reserves `<username>:...` ids to that user; anonymous ids have no ':'.
        tail = f"sim-{uuid.uuid4().hex[:12]}"
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or (f"{username}:{tail}" if username else tail),
            protocol=mqtt.MQTTv5,
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)
        # No paho in-flight cap: with one, paho rescans its whole queue on every PUBACK. Our own
        # `max_queue` bounds what is outstanding.
        self.client.max_inflight_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=self.keepalive)
        self.client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, stop: threading.Event, second: int = 0) -> bool:
        """Queue one reading (QoS 1), waiting while the queue is full; False if stopped first.

        `second`: the whole second of the reading's `ts`, tallied once acknowledged.
        """
        with self._cond:
            while self.counts.outstanding >= self.max_queue:
                if stop.is_set():
                    return False
                self._cond.wait(0.2)
            self.counts.sent += 1
        mid = self.client.publish(topic, payload, qos=1).mid
        if self._tally:
            with self._cond:
                ok = self._early.pop(mid, None)
                if ok is None:
                    self._second_of[mid] = second
                elif ok:
                    self.counts.acked_by_second[second] += 1
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until the broker acknowledged everything sent; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.counts.outstanding > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
        return True

    def close(self) -> None:
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            # paho tries again; at a stack's start the device may not exist yet.
            log.warning("broker refused the connection: %s; retrying", reason)
            return
        log.info("connected to %s:%d", self.host, self.port)
        self._connected.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._closing:
            log.warning(
                "disconnected (%s); unacknowledged readings are re-sent on reconnect", reason
            )

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        with self._cond:
            if self._tally:
                second = self._second_of.pop(mid, None)
                if second is None:
                    self._early[mid] = not reason.is_failure
                elif not reason.is_failure:
                    self.counts.acked_by_second[second] += 1
            if reason.is_failure:
                self.counts.refused += 1
                if self.counts.refused == 1 or self.counts.refused % 1000 == 0:
                    n = self.counts.refused
                    log.error("broker refused a reading (%s), %d so far", reason, n)
            else:
                self.counts.acked += 1
            self._cond.notify_all()
