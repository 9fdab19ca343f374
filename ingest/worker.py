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

import logging
import threading
import time
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest import metrics
from ingest.averages import Averages
from ingest.mqtt_client import LeanClient
from ingest.parsing import MALFORMED_TOPIC, Parser, Reading, Rejection, ts_ms
from ingest.publisher import publish_averages
from ingest.ratelog import RateLimitedLog
from ingest.rebuild import rebuild_averages
from ingest.settings import IngestSettings
from ingest.store import InfluxStore, StoreUnavailableError, reading_line_prefix

log = logging.getLogger("ingest.worker")


class Pending(NamedTuple):
    generation: int  # connection the message came on; its mid means nothing on another
    mid: int
    qos: int
    item: Reading | Rejection


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
        # Per topic: (device, sensor) or why not; per series: its line-protocol prefix.
        self._topics: dict[bytes, tuple[str, str]] = {}  # network thread only
        self._line_prefixes: dict[tuple[str, str], str] = {}  # writer loop only
        self.forwarding = settings.averages_mode == "forward"
        # Leaving a shared subscription: unsubscribe, then take what the broker still sends.
        self._draining = False
        self._last_message = 0.0
        self._drain_until = 0.0
        self.client = self._make_client()
        metrics.BUFFER_DEPTH.set_function(self.unacknowledged)

    @property
    def subscription(self) -> str:
        topic = f"{self.settings.live_topic_prefix}/+/+"
        group = self.settings.share_group
        return f"$share/{group}/{topic}" if group else topic

    def unacknowledged(self) -> int:
        """Messages received and not yet acknowledged (read without the lock: a gauge)."""
        return len(self._pending) + self._in_flight

    # ---- MQTT (paho's network thread) ----

    def _make_client(self) -> LeanClient:
        s = self.settings
        client = LeanClient(
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
        client.on_raw_publish = self._on_publish
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
        topic = self.subscription
        # retainHandling 1: a retained raw reading is delivered once, not on every reconnect.
        client.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=1))
        if self.settings.share_group:
            # A session that was a single worker's (INGEST_WORKERS=1 before) would otherwise
            # keep its plain subscription too and get every reading besides its share.
            client.unsubscribe(f"{self.settings.live_topic_prefix}/+/+")

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
        log.info("subscribed to %s", self.subscription)

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

    def _on_publish(self, mid: int, qos: int, topic: bytes, payload: bytes) -> None:
        if self._stop.is_set() and not self._draining:
            return  # left unacknowledged: the broker redelivers it to our next connection
        self._last_message = time.monotonic()
        try:
            item = self._parse(topic, payload)
        except Exception:  # never let one message kill the network thread
            log.exception("unexpected error parsing a message on %r", topic[:100])
            item = Rejection("internal", "parser error")
        metrics.RECEIVED.inc()
        with self._cond:
            self._pending.append(Pending(self._generation, mid, qos, item))
            if len(self._pending) >= self.settings.batch_size:
                self._cond.notify()

    def _parse(self, topic: bytes, payload: bytes) -> Reading | Rejection:
        names = self._topics.get(topic)
        if names is None:
            names = self._parse_topic(topic)
        if isinstance(names, Rejection):
            item: Reading | Rejection = names
        else:
            arrival = time.time()
            item = self.parser.reading(names, payload, arrival)
            if type(item) is Reading and item.ts == arrival:
                item = self._distinct_arrival(item)
        if type(item) is Rejection:
            metrics.REJECTED.labels(item.reason).inc()
            self._rejects.warning(item.reason, "rejected a reading (%s): %s", *item)
        return item

    def _parse_topic(self, topic: bytes) -> tuple[str, str] | Rejection:
        try:
            names = self.parser.parse_topic(topic.decode("utf-8"))
        except UnicodeDecodeError:
            return Rejection(MALFORMED_TOPIC, "topic is not UTF-8")
        if isinstance(names, Rejection):
            return names  # not kept: a flood of bad topics must not fill the cache
        if len(self._topics) >= self.settings.max_series:
            self._topics.clear()  # bounded memory under a flood of new series
        self._topics[topic] = names
        return names

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
        if not self.forwarding:
            rebuild_averages(self.averages, s, self._stop)
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
                    if drained and self._left_the_share():
                        self._publish_averages()  # the last word on each changed series
                        break
                    if not batch:
                        time.sleep(0.02)  # draining: wait for what the broker still sends
        except StoreUnavailableError as exc:
            log.error("store still down at shutdown, leaving readings to the broker: %s", exc)
        finally:
            self._shutdown()

    def _left_the_share(self) -> bool:
        """On a clean stop in a share group: unsubscribe first, then take what the broker had
        queued for us, so our session keeps no share of the readings while we are gone (for
        good, when scaled down). A worker killed outright keeps its share until it is back."""
        if not self.settings.share_group:
            return True
        now = time.monotonic()
        if not self._draining:
            self._draining = True
            self._drain_until = now + min(5.0, self.settings.shutdown_timeout_s / 2)
            self._last_message = now
            self.client.unsubscribe(self.subscription)
            return False
        return now - self._last_message > 1.0 or now > self._drain_until

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

    def _line(self, r: Reading) -> str:
        key = (r.device, r.sensor)
        prefix = self._line_prefixes.get(key)
        if prefix is None:
            if len(self._line_prefixes) >= self.settings.max_series:
                self._line_prefixes.clear()
            prefix = reading_line_prefix(r.device, r.sensor)
            self._line_prefixes[key] = prefix
        return f"{prefix}{r.value!r} {ts_ms(r.ts)}"

    def _process(self, batch: list[Pending]) -> None:
        readings = [p.item for p in batch if type(p.item) is Reading]
        if readings:
            lines = [self._line(r) for r in readings]
            dropped = self.store.write(lines)
            metrics.STORED.inc(len(readings) - len(dropped))
            metrics.LAST_STORED.set_to_current_time()
            if self.forwarding:
                self._forward(lines, dropped)
            else:
                self.averages.add_all(readings)
                metrics.SERIES.set(len(self.averages))
        self._ack(batch)

    def _forward(self, lines: list[str], dropped: list[str]) -> None:
        """Hand what the store accepted to the averager, before acknowledging it.

        The PUBLISH is queued ahead of the batch's PUBACKs on the same connection, so the broker
        takes it before it forgets the readings; if the connection drops first, the readings
        are redelivered and forwarded again (the averager ignores a point it already has).
        """
        if dropped:
            refused = set(dropped)
            lines = [line for line in lines if line not in refused]
        if lines:
            self.client.publish(self.settings.accepted_topic, "\n".join(lines), qos=1)
            metrics.FORWARDED.inc(len(lines))

    def _ack(self, batch: list[Pending]) -> None:
        with self._cond:
            generation = self._generation if self._connected else -1
        # A message from an older connection is redelivered on the current one (or was on a
        # session the broker no longer has): its mid is not ours to acknowledge here.
        self.client.ack_many([p.mid for p in batch if p.qos == 1 and p.generation == generation])
        with self._cond:
            self._in_flight = 0

    def _publish_averages(self) -> None:
        with self._cond:
            connected = self._connected
        if self.forwarding or not connected:
            return  # keep the changes; they are published once we are back
        publish_averages(self.client, self.store, self.averages, self.settings.avg_topic_prefix)

    def _shutdown(self) -> None:
        self._stop.set()
        log.info("disconnecting (the session keeps anything not acknowledged)")
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()
        metrics.MQTT_READY.set(0)
