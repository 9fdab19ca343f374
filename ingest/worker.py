"""The MQTT side of the ingest worker: receive, batch, store, then acknowledge.

Delivery guarantee (at least once, nothing accepted is lost):
- persistent MQTT 5 session (fixed client id, clean_start False, long session expiry), so the
  broker keeps our subscription and every unacknowledged reading while we are away or dead;
- manual acknowledgement: a reading's PUBACK is sent only after the store accepted the batch
  holding it. Rejected (bad) messages are acknowledged too: they are dropped on purpose;
- back-pressure instead of unbounded buffering: our CONNECT carries Receive Maximum
  (INGEST_RECEIVE_MAXIMUM), the most unacknowledged messages the broker may send us. While the
  store is down nothing is acknowledged, so the pending buffer stops at that bound and the broker
  holds the rest in our session.

Threads: paho's network thread parses each message and appends it to the pending list; the
writer loop (the caller of `run`, the main thread) takes batches, writes them, updates the
averages, acknowledges, and publishes the averages every INGEST_PUBLISH_INTERVAL_S. The averages
state is owned by the writer loop alone.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest import metrics
from ingest.averages import Averages, AverageUpdate
from ingest.parsing import Parser, Reading, Rejection
from ingest.ratelog import RateLimitedLog
from ingest.settings import IngestSettings
from ingest.store import InfluxStore, StoreUnavailableError, average_line, reading_line

log = logging.getLogger("ingest.worker")


class Pending(NamedTuple):
    generation: int  # connection the message came on; its mid means nothing on another
    mid: int
    qos: int
    item: Reading | Rejection


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def average_payload(update: AverageUpdate) -> bytes:
    return json.dumps(
        {
            "value": update.value,
            "count": update.count,
            "window": update.window,
            "ts": rfc3339(update.ts),
        }
    ).encode()


class IngestWorker:
    def __init__(self, settings: IngestSettings, store: InfluxStore) -> None:
        self.settings = settings
        self.store = store
        self.parser = Parser(
            settings.live_topic_prefix,
            settings.max_payload_bytes,
            settings.value_min,
            settings.value_max,
            settings.max_future_s,
        )
        self.averages = Averages(
            settings.windows, settings.max_series, settings.max_points_per_series
        )
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[Pending] = []
        self._in_flight = 0  # taken from _pending, not yet acknowledged
        self._generation = 0
        self._connected = False
        self._stop = threading.Event()
        self._rejects = RateLimitedLog(log, settings.reject_log_interval_s)
        self._last_arrival_ms: dict[tuple[str, str], int] = {}  # network thread only
        self.client = self._make_client()
        metrics.BUFFER_DEPTH.set_function(self.unacknowledged)

    def unacknowledged(self) -> int:
        """Messages received and not yet acknowledged (read without the lock: a gauge)."""
        return len(self._pending) + self._in_flight

    # ---- MQTT (paho's network thread) ----

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(s.mqtt_username, s.mqtt_password.get_secret_value() or None)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        # No paho cap on our own (average) publications: with one, paho rescans its whole
        # outgoing queue on every PUBACK. A publish round is bounded by the number of series.
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        props.ReceiveMaximum = self.settings.receive_maximum
        return props

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        with self._cond:
            self._generation += 1
            # Keep and store the copies received on the earlier connection (they cannot be
            # acknowledged on this one). Even with the session present the broker may not
            # redeliver them all: a Mosquitto killed (not stopped) comes back from its last
            # autosave without what arrived since. What it does redeliver is written twice,
            # which the store absorbs (one point per series and time).
            kept = len(self._pending)
            self._connected = True
        log.info(
            "connected to %s:%d (session present: %s, %d earlier copies kept)",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
            flags.session_present,
            kept,
        )
        topic = f"{self.settings.live_topic_prefix}/+/+"
        # retainHandling 1: a retained raw reading is delivered once, not on every reconnect.
        client.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        if any(r.is_failure for r in reasons):
            log.error("subscription refused: %s (check the ingest role's ACL)", reasons)
            return
        metrics.MQTT_READY.set(1)
        log.info("subscribed to %s/+/+", self.settings.live_topic_prefix)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = False
        metrics.MQTT_READY.set(0)
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._stop.is_set():
            return  # left unacknowledged: the broker redelivers it to our next connection
        try:
            item = self._parse(msg)
        except Exception:  # never let one message kill the network thread
            log.exception("unexpected error parsing a message on %r", msg.topic)
            item = Rejection("internal", "parser error")
        metrics.RECEIVED.inc()
        with self._cond:
            self._pending.append(Pending(self._generation, msg.mid, msg.qos, item))
            if len(self._pending) >= self.settings.batch_size:
                self._cond.notify()

    def _parse(self, msg: mqtt.MQTTMessage) -> Reading | Rejection:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            item: Reading | Rejection = Rejection("malformed_topic", "topic is not UTF-8")
        else:
            arrival = time.time()
            item = self.parser.parse(topic, msg.payload, arrival)
            if type(item) is Reading and item.ts == arrival:
                item = self._distinct_arrival(item)
        if isinstance(item, Rejection):
            metrics.REJECTED.labels(item.reason).inc()
            self._rejects.warning(item.reason, "rejected a reading (%s): %s", *item)
        return item

    def _distinct_arrival(self, reading: Reading) -> Reading:
        """Give a reading stamped on arrival a millisecond of its own within its series.

        The store keeps one point per series and millisecond, so two readings without `ts`
        arriving within the same millisecond would otherwise overwrite each other.
        """
        key = (reading.device, reading.sensor)
        ms = round(reading.ts * 1000)
        last = self._last_arrival_ms.get(key)
        if last is not None and ms <= last:
            ms = last + 1
        if len(self._last_arrival_ms) >= self.settings.max_series:
            self._last_arrival_ms.clear()  # bounded memory; only same-ms neighbours matter
        self._last_arrival_ms[key] = ms
        return reading._replace(ts=ms / 1000)

    # ---- writer loop (main thread) ----

    def run(self) -> None:
        """Connect, then batch/store/ack until `stop()`; flush and disconnect on the way out."""
        s = self.settings
        self.client.connect_async(
            s.mqtt_host,
            s.mqtt_port,
            keepalive=s.mqtt_keepalive_s,
            clean_start=False,
            properties=self._connect_properties(),
        )
        self.client.loop_start()
        next_publish = time.monotonic() + s.publish_interval_s
        try:
            while True:
                batch = self._next_batch(next_publish)
                if batch:
                    self._process(batch)
                if time.monotonic() >= next_publish:
                    self._publish_averages()
                    next_publish = time.monotonic() + s.publish_interval_s
                if self._stop.is_set():
                    with self._cond:
                        drained = not self._pending
                    if drained:
                        self._publish_averages()  # the last word on each changed series
                        break
        except StoreUnavailableError as exc:
            log.error("store still down at shutdown, leaving readings to the broker: %s", exc)
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask the loop to flush what it holds and finish (safe from a signal handler)."""
        if not self._stop.is_set():
            self.store.give_up_at(time.monotonic() + self.settings.shutdown_timeout_s)
            self._stop.set()

    def _next_batch(self, next_publish: float) -> list[Pending]:
        s = self.settings
        deadline = min(time.monotonic() + s.flush_interval_s, next_publish)
        with self._cond:
            while len(self._pending) < s.batch_size and not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Short waits so a stop request (set from a signal handler) is seen quickly.
                self._cond.wait(min(remaining, 0.25))
            batch = self._pending[: s.batch_size]
            del self._pending[: s.batch_size]
            self._in_flight = len(batch)
        return batch

    def _process(self, batch: list[Pending]) -> None:
        readings = [p.item for p in batch if type(p.item) is Reading]
        if readings:
            dropped = self.store.write([reading_line(r) for r in readings])
            metrics.STORED.inc(len(readings) - dropped)
            metrics.LAST_STORED.set_to_current_time()
            self.averages.add_all(readings)
            metrics.SERIES.set(len(self.averages))
        self._ack(batch)

    def _ack(self, batch: list[Pending]) -> None:
        with self._cond:
            generation = self._generation if self._connected else -1
        for p in batch:
            # A message from an older connection is redelivered on the current one (or was on
            # a session the broker no longer has): its mid is not ours to acknowledge here.
            if p.qos and p.generation == generation:
                self.client.ack(p.mid, p.qos)
        with self._cond:
            self._in_flight = 0

    def _publish_averages(self) -> None:
        with self._cond:
            connected = self._connected
        if not connected:
            return  # keep the changes; they are published once we are back
        updates = self.averages.take_updates()
        if not updates:
            return
        prefix = self.settings.avg_topic_prefix
        for u in updates:
            topic = f"{prefix}/{u.window}/{u.device}/{u.sensor}"
            self.client.publish(topic, average_payload(u), qos=1, retain=True)
        self.store.write([average_line(u) for u in updates])
        metrics.AVERAGES_PUBLISHED.inc(len(updates))

    def _shutdown(self) -> None:
        self._stop.set()
        log.info("disconnecting (the session keeps anything not acknowledged)")
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()
        metrics.MQTT_READY.set(0)
