"""Wrong passwords are refused to the guesser only: per (username, address) and per address
(429 with Retry-After); guesses from everywhere slow a username down but never lock its owner
out. Client addresses come from X-Forwarded-For (the test client is a trusted proxy)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.auth_stack import AuthStack
from tests.broker_auth.conftest import AuthStackFactory

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
