"""The node feed's parsing and its thread, without a node: what Hornet never sends (garbage,
a listener that fails) must not stop the feed. The feed against real Hornet is in
test_node_feed.py."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from broker_auth.ledger.feed import MilestoneNews, NodeFeed, parse_milestone, parse_payment


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


def test_news_is_taken_once_and_only_a_few_milestones_ahead_of_the_ledger() -> None:
    news = MilestoneNews(max_ahead=5)
    assert not news.announce(10)  # the ledger has not answered yet: nothing to compare
    assert not news.ledger_read(100)
    assert news.announce(101)
    assert not news.announce(101)  # a replay
    assert not news.announce(100) and not news.announce(7)  # old news
    assert not news.announce(10**9)  # a foreign or forged feed: far ahead
    assert news.ledger_read(100)  # the balances lag the announcement: re-poll soon
    assert not news.ledger_read(101)
    assert news.announce(106) and not news.announce(107)  # at most 5 ahead of 101


def test_a_node_that_went_back_resets_what_was_announced() -> None:
    news = MilestoneNews(max_ahead=5)
    news.ledger_read(500)
    assert news.announce(503)
    assert not news.ledger_read(20)  # restored node: 503 will not come from it
    assert news.announce(21)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2_000)), max_size=200))
def test_news_taken_are_bounded_by_the_ledger_answers(steps: list[tuple[bool, int]]) -> None:
    """Between two ledger answers a feed gets at most MAX_AHEAD announcements taken, each
    newer than the last, whatever it sends."""
    news = MilestoneNews(max_ahead=5)
    taken_since_read: list[int] = []
    for is_read, index in steps:
        if is_read:
            news.ledger_read(index)
            taken_since_read = []
        elif news.announce(index):
            assert 0 < index - news.ledger_index <= 5
            assert all(index > earlier for earlier in taken_since_read)
            taken_since_read.append(index)
            assert len(taken_since_read) <= 5


def test_a_feed_url_it_cannot_use_ends_the_feed_with_an_error_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = NodeFeed("tcp://no-port-here", lambda index: None)
    with caplog.at_level(logging.ERROR, "broker_auth.ledger.feed"):
        feed.start()
        feed._thread.join(5)
    assert not feed._thread.is_alive()
    assert "cannot connect to tcp://no-port-here" in caplog.text


def test_an_oversized_frame_is_dropped_and_the_feed_goes_on() -> None:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    publisher = context.socket(zmq.PUB)
    port = publisher.bind_to_random_port("tcp://127.0.0.1")
    seen: list[int] = []
    feed = NodeFeed(f"tcp://127.0.0.1:{port}", seen.append, silent_s=1.0)
    feed.start()
    try:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            publisher.send(b"lmsi 0 1")
            time.sleep(0.1)
        publisher.send(b"lmsi 1 2 " + b"9" * 100_000)  # over MAX_FRAME_BYTES: link dropped
        # ZMQ drops the link and does not reconnect it; after silent_s the feed subscribes
        # again and later milestones arrive.
        deadline = time.monotonic() + 10
        while 3 not in seen and time.monotonic() < deadline:
            publisher.send(b"lmsi 2 3")
            time.sleep(0.1)
        assert 3 in seen
        assert all(len(str(i)) < 10 for i in seen)
    finally:
        feed.stop()
        publisher.close()


def test_parse_payment_reads_the_address_of_a_value_transaction() -> None:
    address = "A" * 81
    fields = ["9" * 81, address, "60", "9" * 27, "1700000000", "0", "2", "B" * 81, "C" * 81]
    assert parse_payment(" ".join(["tx", *fields]).encode()) == address
    zero = ["9" * 81, address, "0", *fields[3:]]
    assert parse_payment(" ".join(["tx", *zero]).encode()) is None  # no value: not a payment
    for bad in (b"tx", b"tx h", b"lmsi 1 2", b"tx " + b"h " + b"a" * 81 + b" 5", b"tx h A x 5"):
        assert parse_payment(bad) is None, bad


@given(st.binary(max_size=600))
def test_parse_payment_never_raises(frame: bytes) -> None:
    address = parse_payment(b"tx " + frame)
    assert address is None or len(address) == 81
