"""Mosquitto's $SYS messages -> Prometheus samples: known topics map as documented, and no
topic or payload a broker (or anyone allowed to publish there) sends can break the exporter."""

from __future__ import annotations

import math
import re

from hypothesis import given
from hypothesis import strategies as st

from broker_metrics.sys_topics import KNOWN_TOPICS, sample

METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def test_known_topics_map_to_counters_and_gauges() -> None:
    received = sample("$SYS/broker/messages/received", b"1234")
    assert received is not None and received.kind == "counter" and received.value == 1234.0
    assert received.name == "mosquitto_messages_received"  # `_total` added by the client
    connected = sample("$SYS/broker/clients/connected", b"7")
    assert connected is not None and (connected.name, connected.kind) == (
        "mosquitto_clients_connected",
        "gauge",
    )
    retained = sample("$SYS/broker/retained messages/count", b"3")
    assert retained is not None and retained.name == "mosquitto_retained_messages_count"
    load = sample("$SYS/broker/load/messages/received/1min", b"59.13")
    assert load is not None and load.name == "mosquitto_load_messages_received_1min"
    assert load.value == 59.13
    uptime = sample("$SYS/broker/uptime", b"5124 seconds")
    assert uptime is not None and (uptime.name, uptime.value) == ("mosquitto_uptime_seconds", 5124)


def test_text_and_foreign_topics_are_left_out() -> None:
    assert sample("$SYS/broker/version", b"mosquitto version 2.0.11") is None
    assert sample("$SYS/broker/clients/connected", b"nan") is None
    assert sample("$SYS/broker/clients/connected", b"inf") is None
    assert sample("$SYS/broker/clients/connected", b"\xff\xfe") is None
    assert sample("live/plug-1/power", b"12") is None
    assert sample("$SYS/broker/", b"1") is None


def test_every_known_topic_gives_a_distinct_valid_name() -> None:
    names = [s.name for t in KNOWN_TOPICS if (s := sample(t, b"1")) is not None]
    assert len(names) == len(KNOWN_TOPICS) == len(set(names))
    assert all(METRIC_NAME.match(n) for n in names)


@given(st.text(max_size=80), st.binary(max_size=40))
def test_any_message_gives_a_valid_sample_or_none(suffix: str, payload: bytes) -> None:
    found = sample(f"$SYS/broker/{suffix}", payload)
    if found is not None:
        assert METRIC_NAME.match(found.name) and math.isfinite(found.value)
        assert found.kind in ("counter", "gauge")
