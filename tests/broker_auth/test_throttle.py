"""Failed logins are limited per username and per client address (429 with Retry-After)."""

from __future__ import annotations

import httpx
import pytest

from tests.auth_stack import AuthStack
from tests.broker_auth.conftest import AuthStackFactory

PASSWORD = "throttle-password"


@pytest.fixture(scope="module")
def stack(auth_stack_factory: AuthStackFactory) -> AuthStack:
    s = auth_stack_factory(
        "throttle", LOGIN_MAX_FAILURES="5", LOGIN_MAX_FAILURES_PER_IP="12", SIGNUP_MAX_PER_IP="6"
    )
    for name in ("victim", "other", "third"):
        s.register(name, PASSWORD)
    return s


def grants(stack: AuthStack, username: str, password: str) -> httpx.Response:
    return httpx.get(f"{stack.api_url}/api/grants", auth=(username, password), timeout=10)


def test_per_username_limit(stack: AuthStack) -> None:
    for _ in range(5):
        assert grants(stack, "victim", "wrong-password").status_code == 401
    r = grants(stack, "victim", "wrong-password")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert "detail" in r.json()
    # Locked for now even with the right password (no oracle for guesses), others unaffected.
    assert grants(stack, "victim", PASSWORD).status_code == 429
    assert grants(stack, "other", PASSWORD).status_code == 200


def test_per_address_limit(stack: AuthStack) -> None:
    # 5 failures above plus 7 for various names reach the address limit of 12.
    for i in range(7):
        assert grants(stack, f"nobody-{i}", "wrong-password").status_code == 401
    r = grants(stack, "third", PASSWORD)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1


def test_signups_per_address_are_limited(stack: AuthStack) -> None:
    # 3 accounts registered by the fixture; the limit is 6 attempts per window.
    codes = [
        httpx.post(
            f"{stack.api_url}/api/accounts",
            json={"username": f"signup-{i}", "password": PASSWORD},
            timeout=10,
        ).status_code
        for i in range(5)
    ]
    assert codes == [201, 201, 201, 429, 429]


def test_throttling_is_counted(stack: AuthStack) -> None:
    text = httpx.get(f"{stack.api_url}/metrics", timeout=10).text
    assert 'broker_auth_throttled_total{kind="login"}' in text
    assert 'broker_auth_throttled_total{kind="signup"}' in text
