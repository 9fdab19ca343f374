"""Publish the changed moving averages: retained on `avg/<window>/<device>/<sensor>`, and as
`reading_avg` points in the store. Used by whichever process owns the averages."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt

from ingest import metrics
from ingest.averages import Averages, AverageUpdate
from ingest.parsing import format_rfc3339
from ingest.store import InfluxStore, average_line


def average_payload(update: AverageUpdate) -> bytes:
    return json.dumps(
        {
            "value": update.value,
            "count": update.count,
            "window": update.window,
            "ts": format_rfc3339(update.ts),
        }
    ).encode()


def publish_averages(
    client: mqtt.Client, store: InfluxStore, averages: Averages, prefix: str
) -> int:
    """Publish every average changed since the last call; returns how many."""
    averages.advance()  # held (future-stamped) readings the clock has reached
    updates = averages.take_updates()
    if not updates:
        return 0
    for u in updates:
        topic = f"{prefix}/{u.window}/{u.device}/{u.sensor}"
        client.publish(topic, average_payload(u), qos=1, retain=True)
    store.write([average_line(u) for u in updates])
    metrics.AVERAGES_PUBLISHED.inc(len(updates))
    return len(updates)
