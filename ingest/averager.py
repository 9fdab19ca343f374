"""`iot-averager`: the one owner of the moving averages when several ingest workers run.

The workers share the live subscription, so the broker spreads each series over all of them;
an average computed per worker would be wrong. Each worker instead forwards what the store
accepted, as the line-protocol body it wrote, to INGEST_ACCEPTED_TOPIC (QoS 1), and this
process feeds it to the same `Averages` a single worker uses and publishes them the same way.
Exactness rests on `Averages` not depending on arrival order (see ingest/averages.py) and on
a point seen twice (a redelivery, or the rebuild overlapping the queue) changing nothing.

Its session is persistent (the broker queues the forwarded batches while it is away) and it
rebuilds its windows from the store at start, so a restart changes no average. It acknowledges
a batch once it is in the windows: after a crash, the store has everything the windows held.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client import Counter, start_http_server

from ingest import metrics
from ingest.averages import Averages
from ingest.mqtt_client import LeanClient
from ingest.parsing import Reading
from ingest.publisher import publish_averages
from ingest.ratelog import RateLimitedLog
from ingest.rebuild import rebuild_averages
from ingest.settings import IngestSettings, settings_for, shown_client_id
from ingest.store import InfluxStore, parse_reading_line

log = logging.getLogger("ingest.averager")

TAKEN = Counter("ingest_averager_readings", "Forwarded readings taken into the averages")
BAD_LINES = Counter("ingest_averager_bad_lines", "Forwarded lines that could not be read")
RECEIVE_MAXIMUM = 50  # forwarded batches in flight (each up to INGEST_BATCH_SIZE readings)


class Batch(NamedTuple):
    generation: int
    mid: int
    readings: list[Reading]


class Averager:
    def __init__(self, settings: IngestSettings, store: InfluxStore) -> None:
        self.settings = settings
        self.store = store
        self.averages = Averages(
            settings.windows, settings.max_series, settings.max_points_per_series
        )
        self._cond = threading.Condition(threading.Lock())
        self._batches: list[Batch] = []
        self._generation = 0
        self._connected = False
        self._stop = threading.Event()
        self._bad = RateLimitedLog(log, settings.reject_log_interval_s)
        self.client = LeanClient(
            CallbackAPIVersion.VERSION2,
            client_id=settings.averager_client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        self.client.username_pw_set(
            settings.mqtt_username, settings.mqtt_password.get_secret_value() or None
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.max_inflight_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_raw_publish = self._on_publish

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
            self._connected = True
        log.info("connected (session present: %s)", flags.session_present)
        client.subscribe(self.settings.accepted_topic, qos=1)
        metrics.MQTT_READY.set(1)

    def _on_disconnect(self, *_args: Any) -> None:
        with self._cond:
            self._connected = False
        metrics.MQTT_READY.set(0)
        if not self._stop.is_set():
            log.warning("disconnected from the broker; reconnecting")

    def _on_publish(self, mid: int, qos: int, _topic: bytes, payload: bytes) -> None:
        readings = []
        for line in payload.split(b"\n"):
            try:
                readings.append(parse_reading_line(line.decode("utf-8")))
            except ValueError as exc:  # UnicodeDecodeError is one
                BAD_LINES.inc()
                self._bad.warning("line", "a forwarded line could not be read: %s", exc)
        with self._cond:
            self._batches.append(Batch(self._generation if qos else -1, mid, readings))
            self._cond.notify()

    def run(self) -> None:
        s = self.settings
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = s.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        # Connect first, so what workers forward during the rebuild waits in our session.
        self.client.connect_async(
            s.mqtt_host,
            s.mqtt_port,
            keepalive=s.mqtt_keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        try:
            rebuild_averages(self.averages, s, self._stop)
            next_publish = time.monotonic() + s.publish_interval_s
            while not self._stop.is_set():
                with self._cond:
                    if not self._batches:
                        self._cond.wait(max(0.0, min(next_publish - time.monotonic(), 0.25)))
                    batches, self._batches = self._batches, []
                    generation = self._generation if self._connected else -2
                if batches:
                    now = time.time()
                    for batch in batches:
                        self.averages.add_all(batch.readings, now)
                        TAKEN.inc(len(batch.readings))
                    metrics.SERIES.set(len(self.averages))
                    self.client.ack_many([b.mid for b in batches if b.generation == generation])
                if time.monotonic() >= next_publish:
                    self._publish()
                    next_publish = time.monotonic() + s.publish_interval_s
            self._publish()
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            self.store.close()

    def _publish(self) -> None:
        with self._cond:
            connected = self._connected
        if connected:
            publish_averages(self.client, self.store, self.averages, self.settings.avg_topic_prefix)

    def stop(self) -> None:
        if not self._stop.is_set():
            self.store.give_up_at(time.monotonic() + self.settings.shutdown_timeout_s)
            self._stop.set()


def main() -> int:
    settings = settings_for("iot-averager")
    if settings is None:
        return 2
    start_http_server(settings.averager_metrics_port, addr=settings.metrics_host)
    log.info(
        "averager: %s from %s:%d (client id %s), windows %s, metrics on :%d",
        settings.accepted_topic,
        settings.mqtt_host,
        settings.mqtt_port,
        shown_client_id(settings.averager_client_id),
        ",".join(w.label for w in settings.windows),
        settings.averager_metrics_port,
    )
    averager = Averager(settings, InfluxStore(settings))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info(
            "%s received: publishing the last averages, disconnecting", signal.Signals(signum).name
        )
        averager.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    averager.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
