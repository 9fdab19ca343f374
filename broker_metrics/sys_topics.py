"""Which `$SYS/broker/...` topic becomes which Prometheus sample (pure; no MQTT here).

Mosquitto publishes its figures as retained text under `$SYS/broker/` every `sys_interval`
seconds: totals since it started (messages, bytes, publishes: Prometheus counters, which handle
the reset when the broker restarts) and current levels (clients, subscriptions, stored
messages, heap, the 1/5/15-minute loads: gauges). A topic's path becomes the metric's name
(`$SYS/broker/clients/connected` -> `mosquitto_clients_connected`); text that is not a number
(the version, a timestamp) is left out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

PREFIX = "$SYS/broker/"
SUBSCRIPTION = f"{PREFIX}#"
# Totals since the broker started (mosquitto(8), "BROKER STATUS").
COUNTERS = frozenset(
    {
        "bytes/received",
        "bytes/sent",
        "messages/received",
        "messages/sent",
        "publish/bytes/received",
        "publish/bytes/sent",
        "publish/messages/received",
        "publish/messages/sent",
        "publish/messages/dropped",
    }
)
_NOT_NAME = re.compile(r"[^a-z0-9]+")
_LOADS = ("1min", "5min", "15min")
# What Mosquitto 2.0 publishes under $SYS/broker/ (mosquitto(8)), for the alert rules' check
# that every metric they read exists (tests/test_alert_rules.py).
KNOWN_TOPICS = (
    *(f"{PREFIX}{path}" for path in sorted(COUNTERS)),
    *(
        f"{PREFIX}{path}"
        for path in (
            "clients/connected",
            "clients/disconnected",
            "clients/expired",
            "clients/maximum",
            "clients/total",
            "heap/current",
            "heap/maximum",
            "retained messages/count",
            "store/messages/bytes",
            "store/messages/count",
            "subscriptions/count",
            "uptime",
        )
    ),
    *(
        f"{PREFIX}load/{what}/{span}"
        for what in (
            "bytes/received",
            "bytes/sent",
            "connections",
            "messages/received",
            "messages/sent",
            "publish/dropped",
            "publish/received",
            "publish/sent",
            "sockets",
        )
        for span in _LOADS
    ),
)


@dataclass(frozen=True)
class Sample:
    name: str  # without `_total` for counters (prometheus_client adds it)
    kind: Literal["counter", "gauge"]
    value: float
    topic: str


def sample(topic: str, payload: bytes) -> Sample | None:
    """The sample a `$SYS` message stands for, or None (not a figure, or not a number)."""
    if not topic.startswith(PREFIX):
        return None
    path = topic[len(PREFIX) :]
    try:
        text = payload.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if path == "uptime":  # "1234 seconds"
        text = text.removesuffix(" seconds")
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    slug = _NOT_NAME.sub("_", path.lower()).strip("_")
    if not slug:
        return None
    if path == "uptime":
        return Sample("mosquitto_uptime_seconds", "gauge", value, topic)
    kind: Literal["counter", "gauge"] = "counter" if path in COUNTERS else "gauge"
    return Sample(f"mosquitto_{slug}", kind, value, topic)
