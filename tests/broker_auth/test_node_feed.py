"""The node's event feed on real Hornet (its ZMQ plugin): a confirmed payment reaches the grant
at the milestone, not at the watcher's next poll; without the feed the poll still credits it.

Both broker_auth processes poll only every SLOW_POLL_S, so a grant within a second of the
node's confirmation can only come from the feed's wake-up.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from testing import procs
from testing.broker_auth import AuthStack
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.devnet_fixture import pay_from_fresh_seed, start_devnet
from wallet import payments

SLOW_POLL_S = 6.0
PRICE = 3600  # iota per hour: 36 iota buy 36 s
PASSWORD = "feed-password-1"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Devnet]:
    devnet = start_devnet(tmp_path_factory.mktemp("feed-devnet"))
    yield devnet
    devnet.stop()


def _stack(factory: AuthStackFactory, net: procs.Devnet, name: str, zmq_url: str) -> AuthStack:
    stack = factory(
        name, node_url=net.url, WATCHER_INTERVAL_S=str(SLOW_POLL_S), IOTA_NODE_ZMQ_URL=zmq_url
    )
    wait_for(lambda: (stack.health() or {}).get("status") == "ok", 30, "healthz ok")
    stack.create_product("slow", "live/plug-1/#", PRICE)
    return stack


def _confirmation_to_grant_s(stack: AuthStack, net: procs.Devnet) -> float:
    """Pay a new order; seconds from the node confirming the bundle to the grant existing."""
    username = f"feed-{secrets.token_hex(3)}"
    stack.register(username, PASSWORD)
    order = stack.order(username, PASSWORD, "slow", 0.01)  # 36 iota
    result = pay_from_fresh_seed(net, order["address"], order["tag"], order["amount_iota"])
    confirmed_at: list[float] = []

    def watch_node() -> None:
        payments.wait_confirmed(net.url, result.tail_hash, timeout=60, interval=0.02)
        confirmed_at.append(time.monotonic())

    node_watch = threading.Thread(target=watch_node, daemon=True)
    node_watch.start()
    with stack.http() as http:

        def granted() -> bool:
            r = http.get("/api/grants", auth=(username, PASSWORD))
            assert r.status_code == 200, r.text
            return any(g["product_id"] == "slow" for g in r.json())

        wait_for(granted, 60, "the grant", 0.02)
    granted_at = time.monotonic()
    node_watch.join(60)
    assert confirmed_at, "the node never confirmed the payment"
    return granted_at - confirmed_at[0]


def _feed_events(stack: AuthStack) -> float:
    text = httpx.get(f"{stack.api_url}/metrics", timeout=5).text
    lines = [x for x in text.splitlines() if x.startswith("broker_auth_node_feed_events_total{")]
    return sum(float(x.split()[-1]) for x in lines if 'topic="lmsi"' in x)


def test_the_feed_brings_confirmation_to_the_grant_before_the_next_poll(
    auth_stack_factory: AuthStackFactory, net: procs.Devnet
) -> None:
    stack = _stack(auth_stack_factory, net, "feed", net.zmq_url)
    delays = [_confirmation_to_grant_s(stack, net) for _ in range(3)]
    print(f"\nnode feed: confirmation -> grant {[round(d, 3) for d in delays]} s")
    # Without the feed each would wait up to SLOW_POLL_S for the next poll.
    assert max(delays) < 1.5, delays
    assert _feed_events(stack) > 0


def test_without_the_feed_the_poll_still_credits(
    auth_stack_factory: AuthStackFactory, net: procs.Devnet
) -> None:
    silent = f"tcp://127.0.0.1:{procs.free_port()}"  # nothing publishes there
    stack = _stack(auth_stack_factory, net, "nofeed", silent)
    delay = _confirmation_to_grant_s(stack, net)
    print(f"\nno feed, {SLOW_POLL_S} s poll: confirmation -> grant {delay:.3f} s")
    assert delay < SLOW_POLL_S + 3.0, delay
    assert _feed_events(stack) == 0
