"""Who is calling: the admin (Bearer admin token) or a buyer (session token, or HTTP Basic).

Password checks are throttled so that a stranger's guesses refuse only the stranger, and counted
before they run (see `check_password`).

HTTP Basic is for scripts, which send it unasked: no answer challenges for it (a 401 names the
Bearer scheme), so browsers never show their login dialog nor keep Basic credentials that a
page of another site could make them send. Should a browser hold some anyway (typed into a
`user:pw@` URL), a state-changing call it makes with them for another site's page is refused
(`from_another_site`): a browser must use a session token, which it never sends on its own.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from typing import Annotated
from urllib.parse import urlsplit

import anyio
from fastapi import Depends, HTTPException, Request, status

from broker_auth.accounts.throttle import SlidingWindow
from broker_auth.api.errors import too_many
from broker_auth.infra import metrics
from broker_auth.schemas import USERNAME_PATTERN
from broker_auth.service import Runtime

log = logging.getLogger(__name__)

_USERNAME = re.compile(USERNAME_PATTERN)
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="broker_auth admin"'}
BEARER_BUYER = {"WWW-Authenticate": 'Bearer realm="broker_auth"'}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def require_admin(request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = runtime(request).admin_token
    if scheme.lower() != "bearer" or not token:
        metrics.AUTH_FAILURES.labels("admin").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "admin token required", BEARER_CHALLENGE)
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        metrics.AUTH_FAILURES.labels("admin").inc()
        log.warning("wrong admin token from %s", client_ip(request))
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid admin token", BEARER_CHALLENGE)


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


async def check_password(request: Request, username: str, password: str) -> bool:
    """One password check, throttled so that guessing cannot lock the owner out.

    Refused (429) only for the guesser: by (username, client address) and by address. Wrong
    guesses for a username from anywhere only slow its logins down (LOGIN_SLOW_DELAY_S),
    the right password still works.

    Counted first, then checked: the attempt takes its place in each window before scrypt runs
    (atomically across requests and replicas), so however many guesses arrive at once, at most
    the limit are checked. The right password gives the places back.
    """
    rt = runtime(request)
    ip = client_ip(request)
    pair = f"{username}\x00{ip}"
    counted: list[tuple[SlidingWindow, str]] = []
    for window, key in ((rt.throttles.login_by_ip, ip), (rt.throttles.login_by_pair, pair)):
        wait = await _take_place(window, key)
        if wait is not None:
            await _give_back(counted)  # nothing was checked
            raise too_many(
                "login", "too many failed logins from this address; try again later", wait
            )
        counted.append((window, key))
    if await anyio.to_thread.run_sync(rt.throttles.login_by_user.hit, username) is None:
        counted.append((rt.throttles.login_by_user, username))
    else:
        metrics.THROTTLED.labels("login_slowed").inc()
        await anyio.sleep(rt.settings.login_slow_delay_s)
    ok = bool(_USERNAME.match(username)) and await anyio.to_thread.run_sync(
        rt.accounts.authenticate, username, password
    )
    if ok:
        await _give_back(counted)
    else:
        metrics.AUTH_FAILURES.labels("password").inc()
    return ok


# A place may be held by a check in flight (a right password gives it back within the time of
# one scrypt): a burst of correct logins waits this long for one rather than being refused.
PLACE_WAIT_S = 1.5
PLACE_POLL_S = 0.05


async def _take_place(window: SlidingWindow, key: str) -> float | None:
    deadline = anyio.current_time() + PLACE_WAIT_S
    while True:
        wait = await anyio.to_thread.run_sync(window.hit, key)
        if wait is None or anyio.current_time() >= deadline:
            return wait
        await anyio.sleep(PLACE_POLL_S)


async def _give_back(counted: list[tuple[SlidingWindow, str]]) -> None:
    for window, key in counted:
        await anyio.to_thread.run_sync(window.give_back, key)


def _host(netloc: str) -> str:
    """host[:port] of an Origin or Host header, lower case, without a default port."""
    netloc = netloc.strip().lower()
    for default in (":80", ":443"):
        if netloc.endswith(default):
            return netloc[: -len(default)]
    return netloc


def from_another_site(request: Request) -> bool:
    """Whether a browser sent this request for a page of another origin.

    Browsers say so themselves in headers no page can set: `Sec-Fetch-Site` (every current
    browser; `same-origin`, or `none` for what the user typed, are ours) and, for older ones,
    `Origin` (sent with every cross-origin POST, PUT, PATCH and DELETE; compared with the Host
    the request was sent to). Scripts (curl, httpx, the wallet) send neither.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.strip().lower() not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    netloc = urlsplit(origin.strip()).netloc
    return not netloc or _host(netloc) != _host(request.headers.get("host", ""))


async def require_buyer(request: Request) -> str:
    """The authenticated buyer: a session token (Bearer) or HTTP Basic (scripts)."""
    rt = runtime(request)
    token = session_token(request)
    if token is not None:
        username = await anyio.to_thread.run_sync(rt.sessions.username_of, token)
        if username is None:
            metrics.AUTH_FAILURES.labels("session").inc()
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "session expired or revoked", BEARER_BUYER
            )
        return username
    credentials = _basic_credentials(request.headers.get("authorization", ""))
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required", BEARER_BUYER)
    if request.method not in SAFE_METHODS and from_another_site(request):
        # Refused before any check: no password oracle, no throttle place spent.
        metrics.AUTH_FAILURES.labels("basic_cross_site").inc()
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "HTTP Basic is for scripts: a browser logs in (POST /api/sessions) and sends the "
            "session token",
        )
    username, password = credentials
    if not await check_password(request, username, password):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid username or password", BEARER_BUYER
        )
    return username


def session_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_signup_rate(request: Request) -> None:
    """Counts the sign-up, whatever its outcome (refused bodies use the allowance up too)."""
    rt = runtime(request)
    wait = rt.throttles.signups_by_ip.hit(client_ip(request))
    if wait is not None:
        raise too_many(
            "signup", "too many accounts created from this address; try again later", wait
        )


# What a route declares to get the runtime, the buyer, or to be the admin's.
Rt = Annotated[Runtime, Depends(runtime)]
Buyer = Annotated[str, Depends(require_buyer)]
ADMIN = [Depends(require_admin)]
