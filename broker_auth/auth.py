"""Who is calling: the admin (Bearer token) or a buyer (HTTP Basic, throttled on failure)."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import math
import re

from fastapi import HTTPException, Request, status

from broker_auth import metrics
from broker_auth.models import USERNAME_PATTERN
from broker_auth.service import Runtime

log = logging.getLogger(__name__)

_USERNAME = re.compile(USERNAME_PATTERN)
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="broker_auth", charset="UTF-8"'}
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="broker_auth admin"'}


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
        "too many failed logins; try again later",
        {"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


def require_buyer(request: Request) -> str:
    """The authenticated buyer's username (HTTP Basic, the MQTT credentials)."""
    rt = runtime(request)
    credentials = _basic_credentials(request.headers.get("authorization", ""))
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required", BASIC_CHALLENGE)
    username, password = credentials
    ip = client_ip(request)
    for window, key in ((rt.login_by_ip, ip), (rt.login_by_user, username)):
        wait = window.retry_after(key)
        if wait is not None:
            raise _too_many(wait)
    ok = bool(_USERNAME.match(username)) and rt.accounts.authenticate(username, password)
    if not ok:
        rt.login_by_ip.add(ip)
        rt.login_by_user.add(username)
        metrics.AUTH_FAILURES.labels("basic").inc()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid username or password", BASIC_CHALLENGE
        )
    return username


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
