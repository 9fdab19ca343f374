"""The benchmark's bare paho subscriber, as its own process (so its CPU time is its own):
MQTT 5, QoS 1, auto-ack, persistent session, counts messages and does nothing else.

    python -m bench.bare_subscriber PORT PASSWORD CLIENT_ID COUNT

Prints one JSON line `{"subscribed_at", "last_at", "count", "cpu_s"}` once COUNT messages
arrived (COUNT 0: subscribe, then leave the session behind for a backlog run; cpu_s: its whole
life, start-up included). The password comes by environment
(BENCH_SUB_PASSWORD) when PASSWORD is "-".
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt

import testing.mqtt
from broker_auth.broker import acl_model


def main(argv: list[str]) -> int:
    port, password, client_id, expected = int(argv[0]), argv[1], argv[2], int(argv[3])
    if password == "-":
        password = os.environ["BENCH_SUB_PASSWORD"]
    done = threading.Event()
    subscribed = threading.Event()
    state = {"count": 0, "last_at": 0.0, "subscribed_at": 0.0, "cpu_s": 0.0}

    def on_message(_c: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        state["count"] += 1
        if state["count"] >= expected:
            state["last_at"] = time.time()
            done.set()

    def on_subscribe(*_args: object) -> None:
        state["subscribed_at"] = time.time()
        subscribed.set()

    client = testing.mqtt.client(acl_model.INGEST_USERNAME, password, client_id=client_id)
    client.on_connect = lambda c, *_: c.subscribe("live/+/+", qos=1)
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    props = testing.mqtt.session_expiry(3600)
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    if not subscribed.wait(10):
        return 1
    print("subscribed", flush=True)
    if expected and not done.wait(300):
        return 1
    state["cpu_s"] = time.process_time()
    client.disconnect()
    client.loop_stop()
    print(json.dumps(state), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
