"""Password guessing and sign-up floods are throttled; admin routes refuse bad tokens.

A real broker_auth (with its own Mosquitto) with small limits and a 4 s window. Clients come
from different loopback addresses (127.0.0.x), so per-address limits are measured as a remote
attacker and a legitimate user on another address would meet them.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stack.mqtt_probe import MqttProbe
from testing.broker_auth import AuthStack
from tests.broker_auth.conftest import AuthStackFactory

MAX_FAILURES = 4
MAX_FAILURES_PER_IP = 8
MAX_SIGNUPS_PER_IP = 4
WINDOW_S = 4.0  # long enough for a burst on a loaded machine to land inside one window
PASSWORD = "right-password-" + secrets.token_hex(4)
# Operations anyone may call; every other one needs credentials.
PUBLIC = {
    ("get", "/healthz"),
    ("post", "/api/accounts"),
    ("post", "/api/sessions"),
    ("get", "/api/products"),
    ("get", "/metrics"),
    # Sealed purchases (DESIGN.md): the buyer has no account; quotes are throttled and capped
    # per client address (tests/broker_auth/test_sealed_purchases.py).
    ("get", "/api/seller-key"),
    ("post", "/api/quotes"),
    ("get", "/api/quotes/{quote_id}"),
}


@pytest.fixture(scope="module")
def stack(auth_stack_factory: AuthStackFactory) -> AuthStack:
    return auth_stack_factory(
        "throttling",
        LOGIN_MAX_FAILURES=str(MAX_FAILURES),
        LOGIN_MAX_FAILURES_PER_IP=str(MAX_FAILURES_PER_IP),
        LOGIN_WINDOW_S=str(WINDOW_S),
        SIGNUP_MAX_PER_IP=str(MAX_SIGNUPS_PER_IP),
        SIGNUP_WINDOW_S=str(WINDOW_S),
    )


_next_address = iter(range(2, 250))


@pytest.fixture
def clients(stack: AuthStack) -> Iterator[Any]:
    """`clients()` opens an HTTP client on a loopback address no other test uses."""
    opened: list[httpx.Client] = []

    def make() -> httpx.Client:
        address = f"127.0.0.{next(_next_address)}"
        client = httpx.Client(
            base_url=stack.api_url,
            timeout=15,
            transport=httpx.HTTPTransport(local_address=address),
        )
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


MQTT_PASSWORDS: dict[str, str] = {}


def register(client: httpx.Client, prefix: str) -> str:
    username = f"{prefix}-{secrets.token_hex(3)}"
    r = client.post("/api/accounts", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    MQTT_PASSWORDS[username] = r.json()["mqtt_password"]
    return username


def grants(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.get("/api/grants", auth=(username, password))


def retry_after(r: httpx.Response) -> int:
    assert r.status_code == 429, r.text
    assert "detail" in r.json()
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= math.ceil(WINDOW_S)
    return wait


def test_guessing_one_password_gets_429_then_the_window_ends(
    stack: AuthStack, clients: Any
) -> None:
    victim = register(clients(), "victim")
    attacker, owner = clients(), clients()
    for _ in range(MAX_FAILURES):
        assert grants(attacker, victim, "guess-" + secrets.token_hex(4)).status_code == 401
    wait = retry_after(grants(attacker, victim, "guess-" + secrets.token_hex(4)))
    # No oracle: while locked, even the right password is refused to the guesser's address...
    retry_after(grants(attacker, victim, PASSWORD))
    # ...and only there: the owner, elsewhere, is not locked out.
    assert grants(owner, victim, PASSWORD).status_code == 200
    # MQTT, the owner's way to the data, is Mosquitto's and unaffected.
    probe = MqttProbe(stack.broker.port, victim, MQTT_PASSWORDS[victim])
    assert probe.connect()
    assert probe.subscribe("avg/#")
    probe.close()
    time.sleep(wait + 0.2)
    assert grants(attacker, victim, PASSWORD).status_code == 200


def test_guess_rate_is_bounded_by_the_window(clients: Any) -> None:
    """However fast an attacker asks, at most MAX_FAILURES passwords per window are checked."""
    victim = register(clients(), "target")
    attacker = clients()
    started = time.monotonic()
    checked = throttled = 0
    while time.monotonic() - started < 1.5 * WINDOW_S:
        r = grants(attacker, victim, "guess-" + secrets.token_hex(4))
        assert r.status_code in (401, 429)
        checked += r.status_code == 401
        throttled += r.status_code == 429
    elapsed = time.monotonic() - started
    assert throttled > 0
    assert checked <= MAX_FAILURES * (math.floor(elapsed / WINDOW_S) + 1), (checked, elapsed)


def test_one_address_guessing_many_usernames_is_throttled(clients: Any) -> None:
    known = register(clients(), "known")
    sprayer, other = clients(), clients()
    for i in range(MAX_FAILURES_PER_IP):
        assert grants(sprayer, f"spray-{i}-{secrets.token_hex(2)}", "guess-1234").status_code == 401
    retry_after(grants(sprayer, known, PASSWORD))  # the address is locked, for every name
    assert grants(other, known, PASSWORD).status_code == 200  # other addresses are not


def test_account_creation_flood_is_limited_per_address(stack: AuthStack, clients: Any) -> None:
    flooder, neighbour = clients(), clients()
    names = [f"flood-{i}-{secrets.token_hex(2)}" for i in range(MAX_SIGNUPS_PER_IP + 6)]
    codes = []
    for name in names:
        r = flooder.post("/api/accounts", json={"username": name, "password": PASSWORD})
        codes.append(r.status_code)
        if r.status_code == 429:
            retry_after(r)
    assert codes == [201] * MAX_SIGNUPS_PER_IP + [429] * 6
    # Only the accepted ones became MQTT clients.
    for name, code in zip(names, codes, strict=True):
        assert (stack.client_roles(name) is not None) == (code == 201), name
    # Another address is not affected; the flooder may sign up again after the window.
    register(neighbour, "neighbour")
    time.sleep(WINDOW_S + 0.2)
    register(flooder, "later")


def test_invalid_sign_ups_count_too(clients: Any) -> None:
    """A flood of refused bodies (taken names, bad passwords) uses up the allowance as well."""
    flooder = clients()
    taken = register(flooder, "taken")
    attempts = [
        {"username": taken, "password": PASSWORD},  # 409
        {"username": "x", "password": PASSWORD},  # 422
        {"username": "shortpw", "password": "short"},  # 422
    ]
    codes = [flooder.post("/api/accounts", json=body).status_code for body in attempts]
    assert codes == [409, 422, 422]
    r = flooder.post("/api/accounts", json={"username": "valid-one", "password": PASSWORD})
    retry_after(r)


def operations(stack: AuthStack) -> list[tuple[str, str, set[str]]]:
    schema = httpx.get(f"{stack.api_url}/openapi.json", timeout=10).json()
    return [
        (method, path, set(op.get("tags", [])))
        for path, item in schema["paths"].items()
        for method, op in item.items()
    ]


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    path = path.replace("{order_id}", "0123456789abcdef0123456789abcdef")
    bodies: dict[str, dict[str, Any]] = {
        "/api/products": {
            "id": "p-" + secrets.token_hex(3),
            "topic_filter": "live/x/#",
            "price_iota_per_hour": 10,
        },
        "/api/devices": {"device_id": "d-" + secrets.token_hex(3)},
        "/api/orders": {"product_id": "none", "hours": 1},
    }
    body = bodies.get(path, {})
    if method == "post":
        return client.request(method, path, json=body, **kwargs)
    return client.request(method, path, **kwargs)


def test_every_admin_route_refuses_missing_or_wrong_tokens(stack: AuthStack, clients: Any) -> None:
    client = clients()
    buyer = register(client, "buyer")
    admin_ops = [(m, p) for m, p, tags in operations(stack) if "admin" in tags]
    assert {("post", "/api/products"), ("post", "/api/devices"), ("get", "/api/payments")} <= set(
        admin_ops
    )
    token = stack.admin_token
    wrong_headers: list[dict[str, str]] = [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token-" + secrets.token_hex(8)},
        {"Authorization": f"Bearer {token[:-1]}"},  # a prefix of the token
        {"Authorization": f"Bearer {token}x"},  # the token and more
        {"Authorization": f"Bearer {token.upper()}"},
        {"Authorization": f"Basic {token}"},  # right secret, wrong scheme
        {"Authorization": f"Token {token}"},
        {"X-Admin-Token": token},
    ]
    refused = 0
    for method, path in admin_ops:
        for headers in wrong_headers:
            r = call(client, method, path, headers=headers)
            assert r.status_code in (401, 403), (method, path, headers, r.status_code)
            assert "detail" in r.json()
            refused += 1
        # A buyer's valid credentials are not admin credentials.
        r = call(client, method, path, auth=(buyer, PASSWORD))
        assert r.status_code in (401, 403), (method, path)
        r = call(client, method, path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code not in (401, 403), (method, path, r.text)
    assert refused == len(admin_ops) * len(wrong_headers)


def test_every_non_public_route_needs_credentials(stack: AuthStack, clients: Any) -> None:
    client = clients()
    ops = operations(stack)
    assert {(m, p) for m, p, _ in ops} >= PUBLIC
    for method, path, tags in ops:
        if (method, path) in PUBLIC:
            continue
        r = call(client, method, path)
        assert r.status_code == 401, (method, path, r.status_code)
        assert "www-authenticate" in r.headers
        # The admin token is not a buyer login either.
        if "buyers" in tags:
            r = call(client, method, path, headers={"Authorization": f"Bearer {stack.admin_token}"})
            assert r.status_code == 401, (method, path)
