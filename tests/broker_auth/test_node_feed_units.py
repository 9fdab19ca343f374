"""The node feed's parsing and its thread, without a node: what Hornet never sends (garbage,
a listener that fails) must not stop the feed. The feed against real Hornet is in
test_node_feed.py."""

from __future__ import annotations

import threading
import time

import zmq
from hypothesis import given
from hypothesis import strategies as st

from broker_auth.ledger.feed import NodeFeed, parse_milestone


def test_parse_milestone() -> None:
    assert parse_milestone(b"lmsi 44 45") == 45
    assert parse_milestone(b"lmsi 0 0") == 0
    for bad in (b"lmi 44 45", b"lmsi 45", b"lmsi 44 x", b"lmsi 44 -1", b"", b"lmsi 1 2 3"):
        assert parse_milestone(bad) is None, bad


@given(st.binary(max_size=64))
def test_parse_milestone_never_raises(frame: bytes) -> None:
    index = parse_milestone(frame)
    assert index is None or index >= 0


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40))
def test_parse_milestone_reads_the_new_index(previous: int, new: int) -> None:
    assert parse_milestone(f"lmsi {previous} {new}".encode()) == new


def test_feed_survives_garbage_and_a_failing_listener() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    publisher = context.socket(zmq.PUB)
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    seen: list[int] = []
    got = threading.Event()

    def listener(index: int) -> None:
        if index == 7:
            raise RuntimeError("listener failed")
        seen.append(index)
        got.set()

    feed = NodeFeed(f"tcp://127.0.0.1:{port}", listener)
    feed.start()
    try:
        # A SUB socket misses what is published before its subscription reached the PUB side.
        deadline = time.monotonic() + 10
        while not got.is_set() and time.monotonic() < deadline:
            publisher.send(b"lmsi 0 1")
            got.wait(0.1)
        assert seen and seen[0] == 1
        for frame in (b"lmsi x y", b"lmsi 6 7", b"\xff\xfe", b"lmsi 7 8"):
            publisher.send(frame)
        deadline = time.monotonic() + 5
        while 8 not in seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 8 in seen and 7 not in seen
        assert feed.last_index == 8
    finally:
        feed.stop()
        publisher.close()
    assert not feed._thread.is_alive()
