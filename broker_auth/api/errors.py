"""How the API answers failures: JSON `{"detail": ...}`, a 4xx for bad input, a 503 for an
unavailable dependency, never a 500; and how the OpenAPI schema documents those answers."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError

from broker_auth.broker.errors import BrokerRefusedError, BrokerUnavailableError
from broker_auth.errors import ServiceError
from broker_auth.infra import metrics
from broker_auth.schemas import ErrorOut

log = logging.getLogger(__name__)

Responses = dict[int | str, dict[str, Any]]


def error(status_code: int, description: str) -> Responses:
    """The OpenAPI `responses` entry of one error answer, e.g. `error(404, "not yours")`."""
    return {status_code: {"model": ErrorOut, "description": description}}


E401 = error(401, "not logged in")
E401_ADMIN = error(401, "admin token")
E404 = error(404, "not found")
E409 = error(409, "exists")
E422 = error(422, "invalid input")
E429 = error(429, "too many failed logins")
E503 = error(503, "a dependency is unavailable")
# Any route with a body: FastAPI answers 400 to bytes it cannot decode, BodyLimit 413.
EBODY = {**error(400, "body is not UTF-8 JSON"), **error(413, "body over MAX_BODY_BYTES")}
E_LOGIN: Responses = {
    **error(401, "wrong username or password"),
    **E422,
    **error(429, "too many failed logins from this address"),
    **EBODY,
}


def too_many(kind: str, detail: str, wait_s: float) -> HTTPException:
    """A 429 for a throttle `kind` (counted in THROTTLED) with its Retry-After in whole seconds."""
    metrics.THROTTLED.labels(kind).inc()
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS, detail, {"Retry-After": str(max(1, math.ceil(wait_s)))}
    )


async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
    # Echo where and why, never the submitted values (they may be passwords).
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": detail}, 422)


async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, exc.status_code)


async def mongo_down(_request: Request, exc: PyMongoError) -> JSONResponse:
    log.warning("MongoDB error: %s", type(exc).__name__)
    return JSONResponse({"detail": "database unavailable"}, 503)


async def broker_down(_request: Request, _exc: BrokerUnavailableError) -> JSONResponse:
    return JSONResponse({"detail": "MQTT broker unavailable"}, 503)


async def broker_error(_request: Request, exc: BrokerRefusedError) -> JSONResponse:
    log.error("dynamic-security command failed: %s", exc)
    return JSONResponse({"detail": "MQTT broker refused the change"}, 503)


def install_error_handlers(app: FastAPI) -> None:
    app.exception_handler(RequestValidationError)(invalid)
    app.exception_handler(ServiceError)(service_error)
    app.exception_handler(PyMongoError)(mongo_down)
    app.exception_handler(BrokerUnavailableError)(broker_down)
    app.exception_handler(BrokerRefusedError)(broker_error)
