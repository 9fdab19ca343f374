"""One MQTT client reading `$SYS/broker/#`, and a Prometheus collector serving what it read.

The collector answers from the last value of each topic. `mosquitto_broker_connected` is 1 once
the broker's figures arrive on the current connection (0: the figures are the last seen before
it went away); `mosquitto_exporter_login_refused` is 1 while the broker answers but refuses the
exporter's login (its client not made yet, or another password): the broker is up then, and
BrokerDown must not say otherwise.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker_auth.broker.acl_model import METRICS_USERNAME
from broker_metrics import sys_topics
from broker_metrics.settings import ExporterSettings

log = logging.getLogger("broker_metrics")

CONNECTED = "mosquitto_broker_connected"
REFUSED = "mosquitto_exporter_login_refused"


def metric_names() -> set[str]:
    """Every sample name the exporter can serve (counters with `_total`)."""
    names = {CONNECTED, REFUSED}
    for topic in sys_topics.KNOWN_TOPICS:
        found = sys_topics.sample(topic, b"1")
        if found is not None:
            names.add(f"{found.name}_total" if found.kind == "counter" else found.name)
    return names


class SysExporter(Collector):
    def __init__(self, settings: ExporterSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._samples: dict[str, sys_topics.Sample] = {}  # topic -> last sample
        self._connected = False  # and a $SYS message came on this connection
        self._refused = False
        # The broker keeps ids starting `<username>:` to that user (mosquitto/plugin).
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{METRICS_USERNAME}:{secrets.token_hex(6)}",
            protocol=mqtt.MQTTv5,
        )
        self.client.username_pw_set(METRICS_USERNAME, settings.password.get_secret_value())
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._lock:
            self._refused = bool(reason.is_failure)
        if reason.is_failure:
            # broker_auth creates the client at its start: until then the broker refuses it.
            log.warning("broker refused the exporter's login (%s); retrying", reason)
            return
        client.subscribe(sys_topics.SUBSCRIPTION, qos=0)
        log.info("reading %s", sys_topics.SUBSCRIPTION)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was:
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        found = sys_topics.sample(msg.topic, bytes(msg.payload))
        with self._lock:
            self._connected = True  # the broker's figures flow (retained ones come at once)
            if found is not None:
                self._samples[msg.topic] = found

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            connected, refused = self._connected, self._refused
            samples = sorted(self._samples.values(), key=lambda s: s.name)
        yield GaugeMetricFamily(
            CONNECTED,
            "1 while the exporter is connected and reading $SYS; 0: the figures are the last seen",
            value=1.0 if connected else 0.0,
        )
        yield GaugeMetricFamily(
            REFUSED,
            "1 while the broker answers but refuses the exporter's login (broker_auth makes it)",
            value=1.0 if refused else 0.0,
        )
        seen: set[str] = set()
        for s in samples:
            if s.name in seen:  # two topics with one name (never in Mosquitto 2.0): first wins
                continue
            seen.add(s.name)
            if s.kind == "counter":
                yield CounterMetricFamily(s.name, f"Mosquitto {s.topic}", value=s.value)
            else:
                yield GaugeMetricFamily(s.name, f"Mosquitto {s.topic}", value=s.value)
