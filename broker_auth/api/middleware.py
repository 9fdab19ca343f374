"""What wraps every request: the body size limit (413), one value per query parameter (422)
and the request metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker_auth.infra import metrics


class BodyLimit:
    """Refuse request bodies over a size limit (413), declared or streamed.

    `per_path` raises the limit for the given paths (the seller's address imports).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.default_max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(str(scope.get("path", "")), self.default_max_bytes)
        if _declared_too_big(scope, max_bytes):
            refusal = JSONResponse({"detail": f"request body over {max_bytes} bytes"}, 413)
            await refusal(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    # Cut the stream: the truncated body then fails JSON parsing (a 4xx).
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        await self.app(scope, limited, send)


class OneValuePerQueryKey:
    """Refuse a query string naming a parameter twice (422): no route takes a list, and
    FastAPI would silently read the last of `?offset=5&offset=0`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = bytes(scope.get("query_string", b"")).decode("latin-1")
            names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                detail = [
                    {"loc": ["query", name], "msg": "given more than once", "type": "repeated"}
                    for name in repeated
                ]
                await JSONResponse({"detail": detail}, 422)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _declared_too_big(scope: Scope, max_bytes: int) -> bool:
    """Whether a Content-Length header says more than max_bytes (or cannot be read)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                if int(value) > max_bytes:
                    return True
            except ValueError:
                return True
    return False


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


async def count_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """HTTP middleware: counts each answer and times it, by route template (not raw path)."""
    started = time.monotonic()
    response = await call_next(request)
    route = _route_of(request)
    metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    metrics.HTTP_SECONDS.labels(route).observe(time.monotonic() - started)
    return response
