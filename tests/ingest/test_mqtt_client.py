"""LeanClient against a real Mosquitto: it replaces paho internals (PUBLISH decoding, buffered
reads, batched PUBACKs), so check it receives exactly what was sent and acknowledges exactly
what it is told to."""

from __future__ import annotations

import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import testing.mqtt
from broker_auth.broker import acl_model
from ingest.mqtt_client import LeanClient
from testing import procs
from tests.conftest import device_password


class Receiver:
    def __init__(self, broker: procs.MosquittoHandle, client_id: str, topic: str) -> None:
        self.got: list[tuple[int, int, bytes, bytes]] = []
        self.client = LeanClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=True
        )
        self.client.username_pw_set(acl_model.INGEST_USERNAME, broker.ingest_password)
        self.client.on_raw_publish = lambda *m: self.got.append(m)
        self.subscribed = testing.mqtt.subscribe_on_connect(self.client, topic, qos=1)
        props = testing.mqtt.session_expiry(300)
        props.ReceiveMaximum = 65535
        self.client.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def wait_for(self, n: int) -> None:
        procs.wait_until(lambda: len(self.got) >= n, 20, f"{n} messages")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def device(broker: procs.MosquittoHandle) -> mqtt.Client:
    client = testing.mqtt.client(
        acl_model.device_username("dev-a"), device_password("dev-a"), tag="pub"
    )
    client.max_inflight_messages_set(0)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


def test_receives_exactly_what_was_sent_and_acks_batch(mosquitto: procs.MosquittoHandle) -> None:
    topic = f"live/dev-a/lean{uuid.uuid4().hex[:6]}"
    client_id = f"{acl_model.INGEST_USERNAME}:lean-{uuid.uuid4().hex[:6]}"
    receiver = Receiver(mosquitto, client_id, topic)
    pub = device(mosquitto)
    sent = []
    for i in range(3000):
        # sizes across 1-, 2- and 3-byte remaining lengths; some with properties
        payload = (b"%d:" % i) + b"x" * (i * 37 % 40_000)
        props = None
        if i % 7 == 0:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = ("k", "v" * (i % 50))
            props.ContentType = "application/json"
        info = pub.publish(topic, payload, qos=1 if i % 5 else 0, properties=props)
        sent.append((1 if i % 5 else 0, payload, info))
    for _, _, info in sent:
        info.wait_for_publish(10)
    receiver.wait_for(len(sent))
    assert [(q, p) for q, p, _ in sent] == [(q, p) for _, q, _, p in receiver.got]
    assert {t for _, _, t, _ in receiver.got} == {topic.encode()}
    receiver.client.ack_many([mid for mid, qos, _, _ in receiver.got if qos == 1])
    time.sleep(0.5)
    receiver.close()
    again = Receiver(mosquitto, client_id, topic)  # the session: nothing left to redeliver
    time.sleep(1.0)
    assert again.got == []
    again.close()
    pub.disconnect()
    pub.loop_stop()


def test_what_was_not_acked_is_redelivered(mosquitto: procs.MosquittoHandle) -> None:
    topic = f"live/dev-a/lean{uuid.uuid4().hex[:6]}"
    client_id = f"{acl_model.INGEST_USERNAME}:lean-{uuid.uuid4().hex[:6]}"
    receiver = Receiver(mosquitto, client_id, topic)
    pub = device(mosquitto)
    for i in range(100):
        pub.publish(topic, b"%d" % i, qos=1).wait_for_publish(10)
    receiver.wait_for(100)
    receiver.client.ack_many([mid for mid, _, _, payload in receiver.got if int(payload) < 60])
    time.sleep(0.5)
    receiver.close()
    again = Receiver(mosquitto, client_id, topic)
    again.wait_for(40)
    time.sleep(0.5)
    assert sorted(int(p) for _, _, _, p in again.got) == list(range(60, 100))
    again.client.ack_many([mid for mid, _, _, _ in again.got])
    time.sleep(0.3)
    again.close()
    pub.disconnect()
    pub.loop_stop()
