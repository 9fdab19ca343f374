"""A buyer's cancel is carried out by the payment watcher (billing/cancels.py), against real
FerretDB: the order's one writer is the watcher's thread, whatever replica the buyer asked; a
stranger asks nothing of it; a 503 means not cancelled, even when the watcher had already read
the request; a cancel the watcher took is answered even past the wait; one failing cancel
does not stop the watcher; a buyer cannot pile up waiting requests.

Why: on FerretDB two racing compare-and-sets on one order both succeed (bench/store_shapes.py),
so a cancel served by an API thread could undo the payment the watcher recorded at that moment.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from broker_auth.billing.cancels import MAX_WAITING_PER_BUYER, CancelRequests, TooManyWaitingError
from broker_auth.errors import ConflictError, NotFoundError, UnavailableError
from broker_auth.infra.db import Store
from testing.procs import wait_for
from tests.conftest import Mongo


@pytest.fixture(scope="module")
def store(ferret: Mongo) -> Iterator[Store]:
    store = Store(ferret.url, f"cancels_{secrets.token_hex(4)}")
    yield store
    store.close()


def an_order(store: Store, username: str) -> str:
    order_id = secrets.token_hex(8)
    store.orders.insert_one({"_id": order_id, "username": username})
    return order_id


class FakeWatcher:
    """The watcher's loop around `serve`: what it carries out, and on which thread."""

    def __init__(
        self,
        requests: CancelRequests,
        cancel: Callable[[str, str], None],
        leads: Callable[[], bool] = lambda: True,
    ) -> None:
        self.requests = requests
        self.cancel = cancel
        self.leads = leads
        self.calls: list[tuple[str, str, str]] = []  # (thread, username, order id)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watcher")

    def _record(self, username: str, order_id: str) -> None:
        self.calls.append((threading.current_thread().name, username, order_id))
        self.cancel(username, order_id)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.requests.serve(self._record, self.leads)
            time.sleep(0.05)

    def __enter__(self) -> FakeWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def no_error(username: str, order_id: str) -> None:
    return None


def answer(requests: CancelRequests, username: str, order_id: str, answers: list[str]) -> None:
    """Ask for the cancel (in a thread) and keep its answer: "204" or the error's name."""
    try:
        requests.ask(username, order_id)
        answers.append("204")
    except Exception as exc:
        answers.append(type(exc).__name__)


def test_the_watcher_thread_carries_out_the_owners_cancel_and_a_stranger_asks_nothing(
    store: Store,
) -> None:
    requests = CancelRequests(store, wait_s=10)
    order_id = an_order(store, "owner")
    with FakeWatcher(requests, no_error) as watcher:
        with pytest.raises(NotFoundError):
            requests.ask("stranger", order_id)
        with pytest.raises(NotFoundError):
            requests.ask("owner", "no-such-order")
        requests.ask("owner", order_id)
    assert watcher.calls == [("watcher", "owner", order_id)]
    assert store.cancel_requests.count_documents({"order_id": order_id}) == 0


def test_what_the_cancel_refused_reaches_the_buyer_and_a_failure_does_not_stop_the_watcher(
    store: Store,
) -> None:
    requests = CancelRequests(store, wait_s=10)
    paid, broken, fine = (an_order(store, "buyer") for _ in range(3))

    def cancel(username: str, order_id: str) -> None:
        if order_id == paid:
            raise ConflictError("a payment to this order arrived or is on its way: it stays")
        if order_id == broken:
            raise RuntimeError("a bug")

    with FakeWatcher(requests, cancel) as watcher:
        with pytest.raises(ConflictError, match="on its way"):
            requests.ask("buyer", paid)
        with pytest.raises(UnavailableError, match="ask again"):
            requests.ask("buyer", broken)
        requests.ask("buyer", fine)
    assert [c[2] for c in watcher.calls] == [paid, broken, fine]


def test_a_503_means_not_cancelled_even_when_the_watcher_had_read_the_request(
    store: Store,
) -> None:
    """The watcher reads the requests, then is slow (a node call); the asker's wait runs out
    and it answers 503: the watcher must not cancel that order afterwards."""
    requests = CancelRequests(store, wait_s=0.3)
    order_id = an_order(store, "patient")
    gave_up = threading.Event()

    def slow_to_decide() -> bool:
        gave_up.wait(10)
        return True

    def ask() -> None:
        with pytest.raises(UnavailableError, match="it was not cancelled"):
            requests.ask("patient", order_id)
        gave_up.set()

    with FakeWatcher(requests, no_error, leads=slow_to_decide) as watcher:
        asker = threading.Thread(target=ask)
        asker.start()
        asker.join(10)
        assert gave_up.is_set()
        time.sleep(0.3)
    assert watcher.calls == []


def test_a_cancel_the_watcher_took_is_answered_past_the_wait(store: Store) -> None:
    requests = CancelRequests(store, wait_s=0.3)
    order_id = an_order(store, "slow-node")

    def slow_cancel(username: str, order_id: str) -> None:
        time.sleep(1.0)  # the node answers slowly

    with FakeWatcher(requests, slow_cancel) as watcher:
        requests.ask("slow-node", order_id)  # 204, not a 503 for a cancel that happened
    assert len(watcher.calls) == 1


def test_a_buyer_cannot_pile_up_waiting_cancels(store: Store) -> None:
    """No leader answers (its watcher is down): each waiting cancel holds a thread and reads
    its request; a buyer gets MAX_WAITING_PER_BUYER of them, then 429."""
    requests = CancelRequests(store, wait_s=1.5)
    order_id = an_order(store, "flooder")
    answers: list[str] = []
    ask = (requests, "flooder", order_id, answers)
    waiting = [threading.Thread(target=answer, args=ask) for _ in range(MAX_WAITING_PER_BUYER)]
    for t in waiting:
        t.start()
    mine = {"username": "flooder"}
    wait_for(lambda: store.cancel_requests.count_documents(mine) == 3 or None, 10, "3 waiting")
    with pytest.raises(TooManyWaitingError):
        requests.ask("flooder", order_id)
    for t in waiting:
        t.join(10)
    assert answers == ["UnavailableError"] * MAX_WAITING_PER_BUYER
    assert store.cancel_requests.count_documents(mine) == 0


def test_a_double_click_gets_two_answers_from_two_cancels_in_turn(store: Store) -> None:
    requests = CancelRequests(store, wait_s=10)
    order_id = an_order(store, "double")
    answers: list[str] = []
    with FakeWatcher(requests, no_error) as watcher:
        click = (requests, "double", order_id, answers)
        clicks = [threading.Thread(target=answer, args=click) for _ in "ab"]
        for t in clicks:
            t.start()
        for t in clicks:
            t.join(15)
    assert answers == ["204", "204"]
    assert [c[2] for c in watcher.calls] == [order_id, order_id]
