"""Buyers' notifications on notify/<username>: in order, on time, to their owner only, and
kept for a persistent session that was away (QoS 1). Real Mosquitto, broker_auth and Hornet."""

from __future__ import annotations

import datetime as dt
import json
import queue
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest

import testing.mqtt
from testing import procs
from testing.broker_auth import AuthStack
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.devnet_fixture import pay_from_fresh_seed

PASSWORD = "notify-buyer-pw-1"
PRICE = 3600  # 1 iota buys 1 s
NOTICE_S = 3.0


def parse(ts: str) -> float:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class Listener:
    """A buyer's MQTT client with a persistent session, subscribed to its notifications."""

    def __init__(self, stack: AuthStack, username: str, client_id: str) -> None:
        self.stack, self.username, self.client_id = stack, username, client_id
        self.received: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        self.granted: list[int] = []
        self.client: mqtt.Client | None = None

    def connect(self, subscribe_to: str | None = None) -> Listener:
        client = testing.mqtt.client(
            self.username, self.stack.mqtt_passwords[self.username], client_id=self.client_id
        )
        subscribed = queue.Queue[list[int]]()
        client.on_message = lambda _c, _u, m: self.received.put(
            (time.time(), json.loads(m.payload))
        )
        client.on_subscribe = lambda _c, _u, _m, codes, _p: subscribed.put([c.value for c in codes])
        props = testing.mqtt.session_expiry(3600)
        client.connect("127.0.0.1", self.stack.broker.port, clean_start=False, properties=props)
        client.loop_start()
        if subscribe_to is not None:
            client.subscribe(subscribe_to, qos=1)
            self.granted = subscribed.get(timeout=5)
        self.client = client
        return self

    def disconnect(self) -> None:
        assert self.client is not None
        self.client.disconnect()
        self.client.loop_stop()

    def next(self, timeout: float = 10) -> tuple[float, dict[str, Any]]:
        return self.received.get(timeout=timeout)


@dataclass
class Shop:
    stack: AuthStack
    devnet: procs.Devnet

    def buyer(self, prefix: str) -> str:
        username = f"{prefix}-{secrets.token_hex(3)}"
        self.stack.register(username, PASSWORD)
        return username

    def buy(self, username: str, seconds: int) -> dict[str, Any]:
        order = self.stack.order(username, PASSWORD, "notify-live", seconds / 3600)
        pay_from_fresh_seed(self.devnet, order["address"], order["tag"], order["amount_iota"])
        return order


@pytest.fixture(scope="module")
def shop(auth_stack_factory: AuthStackFactory, devnet: procs.Devnet) -> Iterator[Shop]:
    stack = auth_stack_factory("notify", GRANT_ENDING_NOTICE_S=str(NOTICE_S))
    stack.create_product("notify-live", "live/notify/#", PRICE)
    yield Shop(stack, devnet)


def test_a_persistent_session_gets_what_was_sent_while_it_was_away(shop: Shop) -> None:
    john = shop.buyer("john")
    listener = Listener(shop.stack, john, f"{john}:john-{secrets.token_hex(3)}")
    listener.connect(f"notify/{john}")
    assert listener.granted == [1]
    listener.disconnect()  # away; the broker keeps the session and queues QoS 1 messages
    shop.buy(john, 600)
    wait_for(lambda: shop.stack.http().get("/api/grants", auth=(john, PASSWORD)).json(), 60,
             "the grant", 0.25)  # fmt: skip
    listener.connect()  # same client id, no new SUBSCRIBE
    _, note = listener.next()
    assert note["event"] == "grant_started" and note["product_id"] == "notify-live"
    (grant,) = shop.stack.http().get("/api/grants", auth=(john, PASSWORD)).json()
    assert note["expires_at"] == grant["expires_at"]
    assert set(note) == {"event", "product_id", "expires_at", "ts"}
    listener.disconnect()


def test_notifications_arrive_in_order_and_on_time(shop: Shop) -> None:
    jane = shop.buyer("jane")
    listener = Listener(shop.stack, jane, f"{jane}:jane-{secrets.token_hex(3)}").connect(
        f"notify/{jane}"
    )
    shop.buy(jane, 8)  # 8 s: ending 3 s before the end, then ended
    events: list[tuple[float, dict[str, Any]]] = []
    while not events or events[-1][1]["event"] != "grant_ended":
        events.append(listener.next(timeout=90))
    assert [e["event"] for _, e in events] == ["grant_started", "grant_ending", "grant_ended"]
    end = parse(events[0][1]["expires_at"])
    assert all(parse(e["expires_at"]) == end for _, e in events)
    ending_at, ended_at = events[1][0], events[2][0]
    assert abs(ending_at - (end - NOTICE_S)) < 1.0, ending_at - (end - NOTICE_S)
    assert 0 <= ended_at - end < 2.0, ended_at - end
    listener.disconnect()


def test_an_extension_is_announced_with_its_new_end(shop: Shop) -> None:
    ann = shop.buyer("ann")
    listener = Listener(shop.stack, ann, f"{ann}:ann-{secrets.token_hex(3)}").connect(
        f"notify/{ann}"
    )
    shop.buy(ann, 600)
    _, started = listener.next(timeout=60)
    shop.buy(ann, 300)
    _, extended = listener.next(timeout=60)
    assert (started["event"], extended["event"]) == ("grant_started", "grant_extended")
    assert parse(extended["expires_at"]) - parse(started["expires_at"]) == pytest.approx(300, abs=1)
    listener.disconnect()


def test_only_the_owner_may_read_them(shop: Shop) -> None:
    owner, other = shop.buyer("owner"), shop.buyer("other")
    snoop = Listener(shop.stack, other, f"{other}:snoop-{secrets.token_hex(3)}")
    snoop.connect(f"notify/{owner}")
    assert snoop.granted == [0x87]
    snoop.disconnect()
    wildcard = Listener(shop.stack, other, f"{other}:snoop2-{secrets.token_hex(3)}")
    wildcard.connect("notify/#")
    assert wildcard.granted == [0x87]
    own = Listener(shop.stack, owner, f"{owner}:own-{secrets.token_hex(3)}").connect(
        f"notify/{owner}"
    )
    shop.buy(owner, 600)
    assert own.next(timeout=60)[1]["event"] == "grant_started"
    with pytest.raises(queue.Empty):
        wildcard.next(timeout=1)
    own.disconnect()
    wildcard.disconnect()
    # Anonymous clients may not subscribe either.
    anon = shop.stack.probe()
    assert anon.connect() and not anon.subscribe(f"notify/{owner}")
    anon.close()
