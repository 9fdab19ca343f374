"""The deposit pool's process-local caches, without a store: the copy of the free queue's head
(hand-outs) and the counts (/healthz, /metrics). A read function stands in for the store."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from broker_auth.billing.pool_counts import PoolCounts
from broker_auth.billing.queue_head import Candidate, QueueHead


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Queue:
    """The store's free queue as the head reader sees it."""

    def __init__(self, addresses: list[str]) -> None:
        self.free = [Candidate(a, 0) for a in addresses]
        self.reads = 0

    def read(self, leave_out: set[str], limit: int) -> list[Candidate]:
        self.reads += 1
        return [c for c in self.free if c.address not in leave_out][:limit]


def drain(head: QueueHead, queue: Queue, skipped: set[str]) -> list[str]:
    """Take addresses as pool.take does until nothing is free (each taken leaves the queue)."""
    taken: list[str] = []
    while True:
        candidate = head.next(skipped)
        if candidate is None:
            if not head.refill(skipped):
                return taken
            continue
        queue.free = [c for c in queue.free if c.address != candidate.address]
        taken.append(candidate.address)
        head.done(candidate.address)


@given(n=st.integers(0, 100), batch=st.integers(1, 40))
def test_every_free_address_once_in_queue_order(n: int, batch: int) -> None:
    addresses = [f"a{i:03}" for i in range(n)]
    queue = Queue(addresses)
    head = QueueHead(queue.read, batch=batch)
    assert drain(head, queue, set()) == addresses
    # one read per batch, and the one that finds nothing
    assert queue.reads == -(-n // batch) + 1


def test_skipped_addresses_are_left_out_of_the_copy_and_of_the_next_read() -> None:
    queue = Queue(["a", "b", "c", "d"])
    head = QueueHead(queue.read, batch=2)
    assert drain(head, queue, {"a", "c"}) == ["b", "d"]


def test_a_copy_older_than_its_age_is_read_again() -> None:
    clock = FakeClock()
    queue = Queue(["a", "b", "c"])
    head = QueueHead(queue.read, batch=3, max_age_s=30, clock=clock)
    assert head.refill(set())
    first = head.next(set())
    assert first is not None and first.address == "a"
    head.done("a")
    # Meanwhile another replica took b and let a go (queued behind): the store's queue changed.
    queue.free = [Candidate("c", 0), Candidate("a", 1)]
    clock.now += 31
    assert head.next(set()) is None, "a stale copy must not be handed out"
    assert head.refill(set())
    got = head.next(set())
    assert got == Candidate("c", 0)


def test_an_address_in_flight_goes_to_no_other_thread_even_after_a_refill() -> None:
    queue = Queue(["a", "b"])
    head = QueueHead(queue.read, batch=2)
    assert head.refill(set())
    first = head.next(set())
    assert first is not None and first.address == "a"  # in flight: not yet handed out
    second = head.next(set())
    assert second is not None and second.address == "b"
    assert head.next(set()) is None
    assert not head.refill(set()), "both addresses are in flight: nothing to read"
    head.done("a")  # passed over (e.g. the node says it was spent): free again
    assert head.refill(set())
    again = head.next(set())
    assert again is not None and again.address == "a"


def test_threads_that_find_the_copy_used_up_wait_for_one_read() -> None:
    release = threading.Event()
    reads: list[int] = []

    def slow_read(leave_out: set[str], limit: int) -> list[Candidate]:
        reads.append(1)
        release.wait(5)
        return [Candidate(f"a{i}", 0) for i in range(limit)]

    head = QueueHead(slow_read, batch=32)
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(head.refill(set()))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(5)
    assert results == [True] * 8
    assert len(reads) == 1


def test_counts_are_read_at_most_once_per_age_and_own_moves_apply_at_once() -> None:
    clock = FakeClock()
    stored = {"free": 10, "assigned": 0}
    reads: list[int] = []

    def read() -> dict[str, int]:
        reads.append(1)
        return dict(stored)

    counts = PoolCounts(read, clock=clock)
    assert counts.get(5.0) == {"free": 10, "assigned": 0}
    counts.move(free=-1, assigned=+1)
    assert counts.get(5.0) == {"free": 9, "assigned": 1}
    assert len(reads) == 1
    clock.now += 5.0
    assert counts.get(5.0) == {"free": 10, "assigned": 0}, "the store's count once stale"
    assert len(reads) == 2
    assert counts.get(0.0) == stored and len(reads) == 3, "age 0: always read (the seller)"
    counts.none_free()
    assert counts.get(5.0)["free"] == 0
    counts.move(free=-5)
    assert counts.get(5.0)["free"] == 0, "never below 0"


def test_a_hand_out_does_not_wait_for_a_slow_count() -> None:
    reading = threading.Event()
    release = threading.Event()

    def slow_read() -> dict[str, int]:
        reading.set()
        release.wait(5)
        return {"free": 3}

    counts = PoolCounts(slow_read)
    counter = threading.Thread(target=counts.get)
    counter.start()
    assert reading.wait(5)
    moved = threading.Thread(target=lambda: counts.move(free=-1))
    moved.start()
    moved.join(1)
    assert not moved.is_alive(), "a move waited for the read"
    release.set()
    counter.join(5)
