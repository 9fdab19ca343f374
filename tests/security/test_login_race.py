"""Guessing passwords past the limit with concurrent requests: at most LOGIN_MAX_FAILURES
passwords of one username are checked per window from one address, however many guesses
arrive at once and whichever replica answers them.

A 401 means the password was checked (scrypt ran and said no); a 429 means it was refused
before any check. The failed-check counter of each replica (`/metrics`) tells the same story.
Clients come from their own loopback address (127.0.1.x), as a remote attacker would.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from testing.broker_auth import AuthStack, start_replica
from tests.broker_auth.conftest import AuthStackFactory

MAX_FAILURES = 5
GUESSES = 30
WINDOW_S = 60.0  # the whole burst lands in one window
PASSWORD = "right-password-" + secrets.token_hex(4)
FAILED_CHECKS = 'broker_auth_auth_failures_total{kind="password"}'

_next_address = iter(range(2, 250))


@pytest.fixture(scope="module")
def replicas(
    auth_stack_factory: AuthStackFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[AuthStack, AuthStack]]:
    env = {
        "LOGIN_MAX_FAILURES": str(MAX_FAILURES),
        # Only the (username, address) limit binds here: no per-address cap, no slow-down.
        "LOGIN_MAX_FAILURES_PER_IP": "1000",
        "LOGIN_SLOW_AFTER": "1000",
        "LOGIN_WINDOW_S": str(WINDOW_S),
    }
    first = auth_stack_factory("login-race", **env)
    second = start_replica(first, tmp_path_factory.mktemp("login-race-b"))
    yield first, second
    second.close()


def address() -> str:
    return f"127.0.1.{next(_next_address)}"


def client(stack: AuthStack, local_address: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url,
        timeout=30,
        transport=httpx.HTTPTransport(local_address=local_address),
    )


def failed_checks(stack: AuthStack) -> float:
    for line in httpx.get(f"{stack.api_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(FAILED_CHECKS):
            return float(line.split()[-1])
    return 0.0


def burst(targets: list[AuthStack], call: Any) -> Counter[int]:
    """GUESSES wrong guesses at once from one address, spread over `targets`; status counts."""
    source = address()
    clients = [client(s, source) for s in targets]
    start = threading.Barrier(GUESSES)

    def guess(i: int) -> int:
        c = clients[i % len(clients)]
        start.wait(30)
        r: httpx.Response = call(c, "guess-" + secrets.token_hex(6))
        return r.status_code

    try:
        with ThreadPoolExecutor(GUESSES) as pool:
            return Counter(pool.map(guess, range(GUESSES)))
    finally:
        for c in clients:
            c.close()


def login(c: httpx.Client, username: str, password: str) -> httpx.Response:
    return c.post("/api/sessions", json={"username": username, "password": password})


def checked_at_most_the_limit(
    stacks: tuple[AuthStack, ...], codes: Counter[int], before: float
) -> None:
    after = sum(failed_checks(s) for s in stacks)
    print(f"\n{GUESSES} concurrent wrong guesses: {codes[401]} checked, {codes[429]} refused")
    assert set(codes) <= {401, 429}, codes
    assert codes[401] + codes[429] == GUESSES
    assert codes[401] <= MAX_FAILURES, f"{codes[401]} passwords checked (limit {MAX_FAILURES})"
    assert codes[401] >= 1
    assert after - before == codes[401]  # every 401 was one failed check, and no other ran


def register(stack: AuthStack) -> str:
    username = f"race-{secrets.token_hex(3)}"
    stack.register(username, PASSWORD)
    return username


def test_concurrent_login_guesses_check_at_most_the_limit(
    replicas: tuple[AuthStack, AuthStack],
) -> None:
    a, _ = replicas
    victim = register(a)
    before = failed_checks(a)
    codes = burst([a], lambda c, guess: login(c, victim, guess))
    checked_at_most_the_limit((a,), codes, before)
    # The owner, elsewhere, still gets in: a stranger's guesses lock out only the stranger.
    with client(a, address()) as owner:
        assert login(owner, victim, PASSWORD).status_code == 201


def test_concurrent_basic_guesses_check_at_most_the_limit(
    replicas: tuple[AuthStack, AuthStack],
) -> None:
    a, _ = replicas
    victim = register(a)
    before = failed_checks(a)
    codes = burst([a], lambda c, guess: c.get("/api/grants", auth=(victim, guess)))
    checked_at_most_the_limit((a,), codes, before)
    with client(a, address()) as owner:
        assert owner.get("/api/grants", auth=(victim, PASSWORD)).status_code == 200


def test_concurrent_guesses_across_two_replicas_check_at_most_the_limit(
    replicas: tuple[AuthStack, AuthStack],
) -> None:
    victim = register(replicas[0])
    before = sum(failed_checks(s) for s in replicas)
    codes = burst(list(replicas), lambda c, guess: login(c, victim, guess))
    checked_at_most_the_limit(replicas, codes, before)
    for stack in replicas:
        with client(stack, address()) as owner:
            assert login(owner, victim, PASSWORD).status_code == 201
