"""A buyer's cancel is carried out by the payment watcher (billing/cancels.py), against real
FerretDB: the order's one writer is the watcher's thread, whatever replica the buyer asked; a
stranger asks nothing of it; a cancel nobody answered in time is not carried out later; one
failing cancel does not stop the watcher.

Why (measured here): on FerretDB two racing compare-and-sets on one order both succeed, so a
cancel served by an API thread could undo the payment the watcher recorded at that moment.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from broker_auth.billing.cancels import CancelRequests
from broker_auth.errors import ConflictError, NotFoundError, UnavailableError
from broker_auth.infra.db import Store
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

    def __init__(self, requests: CancelRequests, cancel: Callable[[str, str], None]) -> None:
        self.requests = requests
        self.cancel = cancel
        self.calls: list[tuple[str, str, str]] = []  # (thread, username, order id)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watcher")

    def _record(self, username: str, order_id: str) -> None:
        self.calls.append((threading.current_thread().name, username, order_id))
        self.cancel(username, order_id)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.requests.serve(self._record)
            time.sleep(0.05)

    def __enter__(self) -> FakeWatcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def no_error(username: str, order_id: str) -> None:
    return None


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
    assert store.db["cancel_requests"].count_documents({"order_id": order_id}) == 0


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


def test_a_cancel_nobody_answered_in_time_is_not_carried_out_later(store: Store) -> None:
    requests = CancelRequests(store, wait_s=0.5)
    order_id = an_order(store, "patient")
    began = time.monotonic()
    with pytest.raises(UnavailableError, match="did not answer in time"):
        requests.ask("patient", order_id)  # no watcher running: no leader
    assert 0.5 <= time.monotonic() - began < 5
    with FakeWatcher(requests, no_error) as watcher:
        time.sleep(0.5)
    assert watcher.calls == []


def test_a_double_click_gets_two_answers_from_two_cancels_in_turn(store: Store) -> None:
    requests = CancelRequests(store, wait_s=10)
    order_id = an_order(store, "double")
    answers: list[str] = []

    def click() -> None:
        try:
            requests.ask("double", order_id)
            answers.append("204")
        except Exception as exc:
            answers.append(type(exc).__name__)

    with FakeWatcher(requests, no_error) as watcher:
        clicks = [threading.Thread(target=click) for _ in "ab"]
        for t in clicks:
            t.start()
        for t in clicks:
            t.join(15)
    assert answers == ["204", "204"]
    assert [c[2] for c in watcher.calls] == [order_id, order_id]
