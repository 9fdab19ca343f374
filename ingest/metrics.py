"""Prometheus metrics of the ingest worker (served by prometheus_client's HTTP server)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ingest.parsing import REASONS

RECEIVED = Counter("ingest_readings_received", "Messages received on the live topics")
STORED = Counter("ingest_readings_stored", "Readings the store accepted (and we acknowledged)")
REJECTED = Counter(
    "ingest_readings_rejected", "Messages dropped as bad input, by reason", ["reason"]
)
for _reason in REASONS:  # show every reason from the start, at 0
    REJECTED.labels(_reason)

STORE_WRITE_SECONDS = Histogram(
    "ingest_store_write_seconds",
    "Duration of successful store writes (one HTTP request each)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STORE_BATCH_POINTS = Histogram(
    "ingest_store_batch_points",
    "Points per successful store write",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
LAST_STORED = Gauge(
    "ingest_last_stored_timestamp_seconds", "Unix time readings were last accepted by the store"
)
STORE_ERRORS = Counter("ingest_store_errors", "Failed store writes that are retried")
STORE_DROPPED = Counter(
    "ingest_store_dropped_points", "Points the store refused as invalid (4xx); logged and dropped"
)
BUFFER_DEPTH = Gauge(
    "ingest_buffer_depth", "Messages received and not yet acknowledged (pending + being written)"
)
AVERAGES_PUBLISHED = Counter(
    "ingest_averages_published", "Moving averages published (retained MQTT + reading_avg point)"
)
FORWARDED = Counter(
    "ingest_readings_forwarded", "Accepted readings forwarded to the averager (several workers)"
)
SERIES = Gauge("ingest_series", "Series (device, sensor) with moving-average state")
MQTT_READY = Gauge("ingest_mqtt_ready", "1 while connected to the broker and subscribed")
