"""Wrong passwords are refused to the guesser only: per (username, address) and per address
(429 with Retry-After); guesses from everywhere slow a username down but never lock its owner
out. Client addresses come from X-Forwarded-For (the test client is a trusted proxy).

Below them, SlidingWindow itself on FerretDB: concurrent hits from several "replicas" admit
exactly the limit, no window of time holds more events than the limit, `give_back` and
`retry_after`, hashed keys, the clean-up, and MongoDB down."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import httpx
import pytest
from pymongo import MongoClient
from pymongo.collection import Collection

from broker_auth.accounts.throttle import SlidingWindow, purge_expired
from broker_auth.infra.db import Doc
from testing import procs
from testing.broker_auth import AuthStack
from tests.broker_auth.conftest import AuthStackFactory
from tests.conftest import Mongo

T = TypeVar("T")

PASSWORD = "throttle-password"
SLOW_DELAY_S = 0.2


@pytest.fixture(scope="module")
def stack(auth_stack_factory: AuthStackFactory) -> AuthStack:
    s = auth_stack_factory(
        "throttle",
        LOGIN_MAX_FAILURES="5",
        LOGIN_MAX_FAILURES_PER_IP="12",
        LOGIN_SLOW_AFTER="10",
        LOGIN_SLOW_DELAY_S=str(SLOW_DELAY_S),
        SIGNUP_MAX_PER_IP="8",
        FORWARDED_ALLOW_IPS="127.0.0.1",
    )
    for name in ("victim", "other", "third", "target"):
        s.register(name, PASSWORD)
    return s


def grants(stack: AuthStack, username: str, password: str, ip: str) -> httpx.Response:
    return httpx.get(
        f"{stack.api_url}/api/grants",
        auth=(username, password),
        headers={"X-Forwarded-For": ip},
        timeout=10,
    )


def login(stack: AuthStack, username: str, password: str, ip: str) -> httpx.Response:
    return httpx.post(
        f"{stack.api_url}/api/sessions",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": ip},
        timeout=10,
    )


def test_guesses_lock_out_the_guessers_address_only(stack: AuthStack) -> None:
    for _ in range(5):
        assert grants(stack, "victim", "wrong-password", "10.0.0.1").status_code == 401
    r = grants(stack, "victim", "wrong-password", "10.0.0.1")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert "detail" in r.json()
    # From the guesser's address even the right password waits (no oracle for guesses)...
    assert grants(stack, "victim", PASSWORD, "10.0.0.1").status_code == 429
    assert login(stack, "victim", PASSWORD, "10.0.0.1").status_code == 429
    # ...from the owner's own address it works, and the guesser may still use other names.
    assert grants(stack, "victim", PASSWORD, "10.0.0.2").status_code == 200
    assert grants(stack, "other", PASSWORD, "10.0.0.1").status_code == 200


def test_a_strangers_hundred_guesses_do_not_lock_the_buyer_out(stack: AuthStack) -> None:
    # 100 wrong guesses from 25 addresses, 4 each (under every per-address limit).
    codes = [
        login(stack, "target", f"guess-{i}", f"10.1.{i // 4}.{i % 4 + 1}").status_code
        for i in range(100)
    ]
    assert set(codes) == {401}, codes
    started = time.monotonic()
    r = login(stack, "target", PASSWORD, "192.0.2.7")  # the buyer, at home
    took = time.monotonic() - started
    assert r.status_code == 201, r.text
    assert took >= SLOW_DELAY_S  # slowed down, not refused
    assert grants(stack, "target", PASSWORD, "192.0.2.7").status_code == 200
    # A guess stays just as slow: the username is under attack.
    started = time.monotonic()
    assert login(stack, "target", "guess-again", "10.2.0.1").status_code == 401
    assert time.monotonic() - started >= SLOW_DELAY_S


def test_a_right_password_gives_its_place_back(stack: AuthStack) -> None:
    for _ in range(4):
        assert login(stack, "other", "wrong-password", "10.4.0.1").status_code == 401
    assert login(stack, "other", PASSWORD, "10.4.0.1").status_code == 201  # not counted
    assert login(stack, "other", "wrong-password", "10.4.0.1").status_code == 401  # the 5th
    assert login(stack, "other", "wrong-password", "10.4.0.1").status_code == 429


def test_per_address_limit(stack: AuthStack) -> None:
    for i in range(12):
        assert grants(stack, f"nobody-{i}", "wrong-password", "10.3.0.1").status_code == 401
    r = grants(stack, "third", PASSWORD, "10.3.0.1")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert grants(stack, "third", PASSWORD, "10.3.0.2").status_code == 200


def test_signups_per_address_are_limited(stack: AuthStack) -> None:
    # 4 accounts registered by the fixture (from 127.0.0.1); the limit is 8 per window.
    codes = [
        httpx.post(
            f"{stack.api_url}/api/accounts",
            json={"username": f"signup-{i}", "password": PASSWORD},
            timeout=10,
        ).status_code
        for i in range(6)
    ]
    assert codes == [201, 201, 201, 201, 429, 429]


def test_throttling_is_counted(stack: AuthStack) -> None:
    text = httpx.get(f"{stack.api_url}/metrics", timeout=10).text
    assert 'broker_auth_throttled_total{kind="login"}' in text
    assert 'broker_auth_throttled_total{kind="login_slowed"}' in text
    assert 'broker_auth_throttled_total{kind="signup"}' in text


# -- SlidingWindow itself, on the session's FerretDB: several windows on one collection stand
# for several replicas (each has its own memory of what it admitted).


@pytest.fixture(scope="module")
def throttles(ferret: Mongo) -> Iterator[Collection[Doc]]:
    client: MongoClient[Doc] = MongoClient(ferret.url, tz_aware=True)
    yield client[f"throttle_units_{secrets.token_hex(3)}"]["throttles"]
    client.close()


def at_once(n: int, call: Callable[[int], T]) -> list[T]:
    start = threading.Barrier(n)

    def run(i: int) -> T:
        start.wait(10)
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_hits_across_replicas_admit_exactly_the_limit(
    throttles: Collection[Doc],
) -> None:
    replicas = [SlidingWindow(throttles, "units", 5, 30.0) for _ in range(3)]
    waits = at_once(40, lambda i: replicas[i % 3].hit("burst"))
    admitted = [w for w in waits if w is None]
    refused = [w for w in waits if w is not None]
    assert len(admitted) == 5, waits
    assert all(0 < w <= 30.0 for w in refused), refused
    # Refused hits counted nothing: still exactly 5 events, and the hint refuses at once.
    assert replicas[0].hit("burst") is not None
    assert replicas[1].retry_after("burst") is not None
    assert replicas[1].retry_after("another key") is None


class CountingCollection:
    """The real collection, counting the requests a window sends it."""

    def __init__(self, inner: Collection[Doc]) -> None:
        self.inner = inner
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.requests += 1
            return attribute(*args, **kwargs)

        return counted


def test_a_restarted_replica_finds_a_free_slot_without_walking_the_taken_ones(
    throttles: Collection[Doc],
) -> None:
    """A key with 300 events in a large window (a busy address): a replica that has not admitted
    it yet (it just restarted) used to read all 300 taken slots before the free one, per
    request; it now starts at a random slot."""
    before = SlidingWindow(throttles, "restart", 100_000, 600.0)
    for _ in range(300):
        assert before.hit("busy") is None
    costs = []
    for _ in range(9):  # nine fresh replicas (or restarts), one request each
        counting = CountingCollection(throttles)
        fresh = SlidingWindow(cast("Collection[Doc]", counting), "restart", 100_000, 600.0)
        assert fresh.hit("busy") is None
        costs.append(counting.requests)
    assert sorted(costs)[4] <= 5, costs  # the median: a read, the insert, a re-check


def test_give_back_returns_one_place(throttles: Collection[Doc]) -> None:
    window = SlidingWindow(throttles, "give-back", 3, 30.0)
    assert [window.hit("k") for _ in range(3)] == [None, None, None]
    assert window.hit("k") is not None
    window.give_back("k")
    assert window.retry_after("k") is None
    assert window.hit("k") is None
    assert window.hit("k") is not None
    for _ in range(5):  # more than it admitted: only its own events go back
        window.give_back("k")
    assert window.retry_after("k") is None
    assert [window.hit("k") is None for _ in range(4)] == [True, True, True, False]


def test_retry_after_counts_nothing(throttles: Collection[Doc]) -> None:
    window = SlidingWindow(throttles, "read-only", 2, 30.0)
    for _ in range(10):
        assert window.retry_after("k") is None
    assert window.hit("k") is None
    assert window.hit("k") is None
    wait = window.retry_after("k")
    assert wait is not None and 29 < wait <= 30


def test_events_leave_the_window_and_no_window_holds_more(throttles: Collection[Doc]) -> None:
    """8 threads hitting for 4 windows of 0.5 s (several epoch boundaries): the stored events
    are never more than the limit within any 0.5 s, and each window admits again."""
    limit, window_s = 3, 0.5
    windows = [SlidingWindow(throttles, "slide", limit, window_s) for _ in range(2)]
    deadline = time.time() + 4 * window_s
    admitted: list[float] = []

    def hammer(i: int) -> None:
        while time.time() < deadline:
            if windows[i % 2].hit("k") is None:
                admitted.append(time.time())

    at_once(8, hammer)
    h = windows[0]._hash("k")
    docs = throttles.find({"_id": {"$regex": f"^{h}:"}})
    times = sorted(float(d["t"]) for d in docs if "t" in d)  # not the "every slot taken" hint
    assert len(times) == len(admitted)
    for t in times:
        assert sum(t - window_s < u <= t for u in times) <= limit, (t, times)
    # It slides: each window of the run admitted someone (events every ~window_s / limit).
    assert len(times) >= 3 * limit, times


def test_keys_are_stored_hashed(throttles: Collection[Doc]) -> None:
    window = SlidingWindow(throttles, "hashed", 1, 30.0)
    key = "alice-secret-name\x00192.0.2.77"
    assert window.hit(key) is None
    assert window.hit(key) is not None  # and a hint written
    for doc in throttles.find({}):
        text = repr(doc)
        assert "alice" not in text and "192.0.2.77" not in text, doc
        assert "expires_at" in doc


def test_purge_deletes_only_what_nobody_reads(throttles: Collection[Doc]) -> None:
    old = SlidingWindow(throttles, "purged", 1, 0.2)
    fresh = SlidingWindow(throttles, "kept", 1, 30.0)
    assert old.hit("k") is None
    assert fresh.hit("k") is None
    time.sleep(0.7)  # two epochs of 0.2 s have passed
    assert purge_expired(throttles) >= 1
    assert fresh.hit("k") is not None  # still counted
    assert old.hit("k") is None


def test_mongodb_down_admits() -> None:
    client: MongoClient[Doc] = MongoClient(
        f"mongodb://127.0.0.1:{procs.free_port()}/", serverSelectionTimeoutMS=200
    )
    window = SlidingWindow(client["x"]["throttles"], "down", 1, 30.0)
    assert window.hit("k") is None
    assert window.hit("k") is None
    window.give_back("k")
    assert window.retry_after("k") is None
    client.close()
