"""Who is calling: the admin (Bearer admin token) or a buyer (session token, or HTTP Basic).

Password checks are throttled so that a stranger's guesses refuse only the stranger."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import re
from typing import Any

import anyio
from fastapi import HTTPException, Request, status

from broker_auth import metrics
from broker_auth.models import USERNAME_PATTERN, ErrorOut
from broker_auth.service import Runtime

log = logging.getLogger(__name__)

_USERNAME = re.compile(USERNAME_PATTERN)
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="broker_auth", charset="UTF-8"'}
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="broker_auth admin"'}
BEARER_BUYER = {"WWW-Authenticate": 'Bearer realm="broker_auth"'}
E_LOGIN: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "wrong username or password"},
    422: {"model": ErrorOut, "description": "invalid input"},
    429: {"model": ErrorOut, "description": "too many failed logins from this address"},
    400: {"model": ErrorOut, "description": "body is not UTF-8 JSON"},
    413: {"model": ErrorOut, "description": "body over MAX_BODY_BYTES"},
}


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


def _too_many(retry_after: float) -> HTTPException:
    metrics.THROTTLED.labels("login").inc()
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        "too many failed logins from this address; try again later",
        {"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


async def check_password(request: Request, username: str, password: str) -> bool:
    """One password check, throttled so that guessing cannot lock the owner out.

    Refused (429) only for the guesser: by (username, client address) and by address. Wrong
    guesses for a username from anywhere only slow its logins down (LOGIN_SLOW_DELAY_S),
    the right password still works.
    """
    rt = runtime(request)
    ip = client_ip(request)
    pair = f"{username}\x00{ip}"
    for window, key in ((rt.login_by_ip, ip), (rt.login_by_pair, pair)):
        wait = window.retry_after(key)
        if wait is not None:
            raise _too_many(wait)
    if rt.login_by_user.retry_after(username) is not None:
        metrics.THROTTLED.labels("login_slowed").inc()
        await anyio.sleep(rt.settings.login_slow_delay_s)
    ok = bool(_USERNAME.match(username)) and await anyio.to_thread.run_sync(
        rt.accounts.authenticate, username, password
    )
    if not ok:
        for window, key in (
            (rt.login_by_ip, ip),
            (rt.login_by_pair, pair),
            (rt.login_by_user, username),
        ):
            window.add(key)
        metrics.AUTH_FAILURES.labels("password").inc()
    return ok


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
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required", BASIC_CHALLENGE)
    username, password = credentials
    if not await check_password(request, username, password):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid username or password", BASIC_CHALLENGE
        )
    return username


def session_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def check_signup_rate(request: Request) -> None:
    rt = runtime(request)
    ip = client_ip(request)
    wait = rt.signups_by_ip.retry_after(ip)
    if wait is not None:
        metrics.THROTTLED.labels("signup").inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many accounts created from this address; try again later",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    rt.signups_by_ip.add(ip)
