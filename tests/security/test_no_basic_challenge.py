"""HTTP Basic is for scripts, never a browser's cached credential.

- No answer asks for Basic credentials (`WWW-Authenticate: Basic`): a browser that never saw
  the challenge never shows its login dialog, so it holds no Basic credential for the origin.
- A state-changing buyer call made from another site's page with HTTP Basic (what a browser
  that did cache them would send along with a cross-site form or fetch) is refused before any
  password check, and changes nothing. The same call from a script (`curl -u`: no Origin, no
  Sec-Fetch-* headers) works, and so does a session token from any page.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from testing.broker_auth import AuthStack
from tests.broker_auth.conftest import AuthStackFactory

PASSWORD = "basic-buyer-" + secrets.token_hex(4)
EVIL = "https://evil.example"
FAILED_CHECKS = 'broker_auth_auth_failures_total{kind="password"}'
# What browsers add to a cross-site request (a form post, a fetch from another site's page).
CROSS_SITE: list[dict[str, str]] = [
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
    {"Origin": EVIL, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"},
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},  # sandboxed frame, data: URL
    {"Origin": "https://shop.evil.example", "Sec-Fetch-Site": "same-site"},
    {"Origin": EVIL},  # a browser that sends no Sec-Fetch-* headers
    {"Sec-Fetch-Site": "cross-site"},  # one that sends no Origin
]


@pytest.fixture(scope="module")
def stack(auth_stack_factory: AuthStackFactory) -> AuthStack:
    return auth_stack_factory(
        "basic-challenge",
        # Many wrong credentials on purpose: no throttle in the way.
        LOGIN_MAX_FAILURES="100000",
        LOGIN_MAX_FAILURES_PER_IP="100000",
        LOGIN_SLOW_AFTER="100000",
        SIGNUP_MAX_PER_IP="100000",
    )


def register(stack: AuthStack) -> str:
    username = f"basic-{secrets.token_hex(3)}"
    stack.register(username, PASSWORD)
    return username


def mqtt_login_works(stack: AuthStack, username: str, mqtt_password: str) -> bool:
    probe = stack.probe(username, mqtt_password)
    try:
        return probe.connect()
    finally:
        probe.close()


def failed_checks(stack: AuthStack) -> float:
    for line in httpx.get(f"{stack.api_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(FAILED_CHECKS):
            return float(line.split()[-1])
    return 0.0


def operations(stack: AuthStack) -> list[tuple[str, str]]:
    schema = httpx.get(f"{stack.api_url}/openapi.json", timeout=10).json()
    return [(method, path) for path, item in schema["paths"].items() for method in item]


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    path = path.replace("{order_id}", "0123456789abcdef0123456789abcdef")
    path = path.replace("{device_id}", "no-such-device").replace("{product_id}", "no-such")
    path = path.replace("{quote_id}", "0123456789abcdef0123456789abcdef")
    if method in ("post", "put", "patch"):
        return client.request(method, path, json={}, **kwargs)
    return client.request(method, path, **kwargs)


def test_no_answer_carries_a_basic_challenge(stack: AuthStack) -> None:
    username = register(stack)
    credentials: list[dict[str, Any]] = [
        {},
        {"auth": (username, "wrong-password")},
        {"auth": ("no-such-user", "wrong-password")},
        {"headers": {"Authorization": "Basic not-base64!"}},
        {"headers": {"Authorization": "Bearer no-such-session"}},
        {"headers": {"Authorization": "Negotiate abc"}},
    ]
    unauthorized = 0
    challenges: set[str] = set()
    with stack.http() as client:
        for method, path in [*operations(stack), ("get", "/docs"), ("get", "/admin")]:
            for kwargs in credentials:
                r = call(client, method, path, **kwargs)
                challenge = r.headers.get("www-authenticate", "")
                assert "basic" not in challenge.lower(), (method, path, kwargs, challenge)
                if r.status_code == 401:
                    unauthorized += 1
                    challenges.add(challenge.split()[0] if challenge else "")
    print(f"\n{unauthorized} answers 401, challenges: {sorted(challenges)}")
    assert unauthorized > 20
    assert "Basic" not in challenges


def test_cross_site_post_with_basic_credentials_is_refused(stack: AuthStack) -> None:
    username = register(stack)
    mqtt_password = stack.mqtt_passwords[username]
    before = failed_checks(stack)
    with stack.http() as client:
        for headers in CROSS_SITE:
            r = client.post(
                "/api/account/mqtt-password", auth=(username, PASSWORD), headers=headers
            )
            assert r.status_code == 403, (headers, r.status_code, r.text)
            assert "detail" in r.json()
            assert "basic" not in r.headers.get("www-authenticate", "").lower()
            # A form post (text/plain, no preflight) is refused just the same.
            r = client.post(
                "/api/account/mqtt-password",
                auth=(username, PASSWORD),
                headers={**headers, "Content-Type": "text/plain"},
                content=b"x=1",
            )
            assert r.status_code == 403, (headers, r.status_code)
            # A wrong password is refused the same way, before any check (no oracle, no
            # throttle slot spent on the victim's name).
            r = client.post(
                "/api/account/mqtt-password", auth=(username, "guess-123456"), headers=headers
            )
            assert r.status_code == 403, (headers, r.status_code)
        # The login password cannot be changed that way either, nor an order placed.
        r = client.post(
            "/api/account/password",
            auth=(username, PASSWORD),
            headers=CROSS_SITE[0],
            json={"old_password": PASSWORD, "new_password": "attacker-chosen-pw"},
        )
        assert r.status_code == 403
        r = client.post(
            "/api/orders",
            auth=(username, PASSWORD),
            headers=CROSS_SITE[0],
            json={"product_id": "none", "hours": 1},
        )
        assert r.status_code == 403
    assert failed_checks(stack) == before  # no password was checked
    # Nothing changed: the MQTT password still works, the login password too.
    assert mqtt_login_works(stack, username, mqtt_password)
    with stack.http() as client:
        assert client.get("/api/grants", auth=(username, PASSWORD)).status_code == 200


def test_scripts_keep_http_basic(stack: AuthStack) -> None:
    username = register(stack)
    old = stack.mqtt_passwords[username]
    # What `curl -u user:pw -X POST` sends: no Origin, no Sec-Fetch-* headers.
    r = httpx.post(
        f"{stack.api_url}/api/account/mqtt-password",
        auth=(username, PASSWORD),
        headers={"User-Agent": "curl/8.5.0", "Accept": "*/*"},
        timeout=15,
    )
    assert r.status_code == 201, r.text
    new = r.json()["mqtt_password"]
    assert not mqtt_login_works(stack, username, old)
    assert mqtt_login_works(stack, username, new)
    # Reads with Basic work from anywhere (a cross-site page cannot read the answer).
    r = httpx.get(
        f"{stack.api_url}/api/grants",
        auth=(username, PASSWORD),
        headers=CROSS_SITE[0],
        timeout=15,
    )
    assert r.status_code == 200


def test_browsers_on_this_origin_and_session_tokens_are_not_refused(stack: AuthStack) -> None:
    username = register(stack)
    with stack.http() as client:
        # This origin's own pages (the portal uses tokens, but Basic is not a CSRF here).
        own = {"Origin": stack.api_url, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
        r = client.post("/api/account/mqtt-password", auth=(username, PASSWORD), headers=own)
        assert r.status_code == 201, r.text
        # A session token is never sent by a browser on its own: it proves the page had it.
        token = client.post(
            "/api/sessions", json={"username": username, "password": PASSWORD}
        ).json()["token"]
        r = client.post(
            "/api/account/mqtt-password",
            headers={**CROSS_SITE[1], "Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
