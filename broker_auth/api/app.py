"""The HTTP API (FastAPI): accounts, products, devices, orders, grants, payments, health.

Handlers are plain `def`s: pymongo and the control client block, so Starlette runs them in
its thread pool. Every error is JSON `{"detail": ...}`: bad input is a 4xx, an unavailable
dependency a 503, never a 500.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker_auth.api.auth import (
    check_signup_rate,
    client_ip,
    require_admin,
    require_buyer,
    runtime,
)
from broker_auth.api.docs import router as docs_routes
from broker_auth.api.routes_account import router as account_routes
from broker_auth.api.routes_admin import router as admin_routes
from broker_auth.api.schemas import (
    AccountCreate,
    AccountOut,
    DepositAddressesIn,
    DepositAddressesLoaded,
    DepositAddressList,
    DepositAddressOut,
    DeviceCreate,
    DeviceCreated,
    ErrorOut,
    GrantOut,
    Health,
    OrderCreate,
    OrderCreated,
    OrderOut,
    PaymentOut,
    ProductIn,
    ProductOut,
    SweptIn,
)
from broker_auth.billing.pool import AddressState
from broker_auth.broker.errors import BrokerRefusedError, BrokerUnavailableError
from broker_auth.errors import ServiceError
from broker_auth.infra import metrics
from broker_auth.portal import mount_portal
from broker_auth.service import Runtime
from broker_auth.settings import Settings

log = logging.getLogger(__name__)

Buyer = Annotated[str, Depends(require_buyer)]
Rt = Annotated[Runtime, Depends(runtime)]
ADMIN = [Depends(require_admin)]

E401: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut, "description": "not logged in"}}
E422: dict[int | str, dict[str, Any]] = {422: {"model": ErrorOut, "description": "invalid input"}}
E429: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorOut, "description": "too many failed logins"}
}
E503: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "a dependency is unavailable"}
}
# Any route with a body: FastAPI answers 400 to bytes it cannot decode, BodyLimit 413.
EBODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "body is not UTF-8 JSON"},
    413: {"model": ErrorOut, "description": "body over MAX_BODY_BYTES"},
}


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
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await JSONResponse({"detail": f"request body over {max_bytes} bytes"}, 413)(
                        scope, receive, send
                    )
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


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime(settings)
        await anyio.to_thread.run_sync(rt.start)
        app.state.runtime = rt
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(rt.stop)

    app = FastAPI(
        title="broker_auth",
        summary="Accounts, products, orders, IOTA payments and time-limited live access",
        description=(
            "Buyers register, order live access to a product, pay IOTA to the order's own "
            "deposit address, and get the product's MQTT topics for the time paid (what the "
            "ledger confirms on that address counts; the tag is only shown to wallets). "
            "Admin calls carry `Authorization: Bearer <BROKER_ADMIN_TOKEN>`; buyer calls "
            "carry `Authorization: Bearer <session token>` (from `POST /api/sessions`) or "
            "HTTP Basic with the buyer's username and login password (scripts). Times are "
            'RFC 3339 UTC; errors are JSON `{"detail": ...}`.'
        ),
        version="1.0.0",
        lifespan=lifespan,
        # Swagger UI from this origin's own files (api_docs.py); no ReDoc, no CDN.
        docs_url=None,
        redoc_url=None,
    )

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Any) -> Response:
        started = time.monotonic()
        response: Response = await call_next(request)
        route = _route_of(request)
        metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(route).observe(time.monotonic() - started)
        return response

    imports = {
        "/api/deposit-addresses": settings.max_import_body_bytes,
        "/api/deposit-addresses/swept": settings.max_import_body_bytes,
    }
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, per_path=imports)
    _install_error_handlers(app)
    _install_routes(app)
    app.include_router(account_routes)
    app.include_router(admin_routes)
    app.include_router(docs_routes)
    # The buyer's web portal at / (static files; see broker_auth/portal).
    mount_portal(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # Echo where and why, never the submitted values (they may be passwords).
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code)

    @app.exception_handler(PyMongoError)
    async def mongo_down(_request: Request, exc: PyMongoError) -> JSONResponse:
        log.warning("MongoDB error: %s", type(exc).__name__)
        return JSONResponse({"detail": "database unavailable"}, 503)

    @app.exception_handler(BrokerUnavailableError)
    async def broker_down(_request: Request, exc: BrokerUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": "MQTT broker unavailable"}, 503)

    @app.exception_handler(BrokerRefusedError)
    async def broker_error(_request: Request, exc: BrokerRefusedError) -> JSONResponse:
        log.error("dynamic-security command failed: %s", exc)
        return JSONResponse({"detail": "MQTT broker refused the change"}, 503)


def _install_routes(app: FastAPI) -> None:
    @app.get(
        "/healthz",
        response_model=Health,
        summary="Service health and each dependency's state",
        responses={503: {"model": Health, "description": "a dependency is down"}},
        tags=["health"],
    )
    def healthz(rt: Rt) -> JSONResponse:
        try:
            rt.store.ping()
            mongo = "ok"
        except PyMongoError:
            mongo = "down"
        metrics.MONGO_UP.set(1 if mongo == "ok" else 0)
        broker = "ok" if rt.dynsec.ready else "down"
        node = "ok" if rt.watcher.node_ok else "down"
        free = rt.pool.free_count() if mongo == "ok" else 0
        pool = (
            "empty" if free == 0 else "low" if free < rt.settings.deposit_pool_low_water else "ok"
        )
        healthy = mongo == broker == node == "ok" and pool != "empty"
        body = Health(
            status="ok" if healthy else "degraded",
            mongo=mongo,
            broker=broker,
            node=node,
            deposit_addresses=pool,
            free_addresses=free,
            leader=rt.lease.held(),
        )
        return JSONResponse(body.model_dump(), 200 if healthy else 503)

    @app.post(
        "/api/accounts",
        response_model=AccountOut,
        status_code=201,
        summary="Register a buyer; the answer holds the MQTT password (shown once)",
        responses={
            409: {"model": ErrorOut, "description": "username taken"},
            **E422,
            429: {"model": ErrorOut, "description": "too many sign-ups"},
            **E503,
            **EBODY,
        },
        dependencies=[Depends(check_signup_rate)],
        tags=["buyers"],
    )
    def create_account(body: AccountCreate, rt: Rt) -> AccountOut:
        mqtt_password = rt.accounts.create(body.username, body.password)
        return AccountOut(username=body.username, mqtt_password=mqtt_password)

    @app.get(
        "/api/products",
        response_model=list[ProductOut],
        summary="Products on sale",
        tags=["products"],
    )
    def list_products(rt: Rt) -> list[ProductOut]:
        return rt.products.list()

    @app.post(
        "/api/products",
        response_model=ProductOut,
        status_code=201,
        summary="Create a product (admin)",
        dependencies=ADMIN,
        responses={
            **E401,
            409: {"model": ErrorOut, "description": "exists"},
            **E422,
            **E503,
            **EBODY,
        },
        tags=["admin"],
    )
    def create_product(body: ProductIn, rt: Rt) -> ProductOut:
        return rt.products.create(body)

    @app.post(
        "/api/devices",
        response_model=DeviceCreated,
        status_code=201,
        summary="Register a device (admin); its MQTT password is shown once",
        dependencies=ADMIN,
        responses={
            **E401,
            409: {"model": ErrorOut, "description": "exists"},
            **E422,
            **E503,
            **EBODY,
        },
        tags=["admin"],
    )
    def create_device(body: DeviceCreate, rt: Rt) -> DeviceCreated:
        username, password = rt.devices.create(body.device_id)
        return DeviceCreated(device_id=body.device_id, username=username, password=password)

    @app.post(
        "/api/orders",
        response_model=OrderCreated,
        status_code=201,
        summary="Order live access: pay amount_iota to address with tag",
        responses={
            **E401,
            404: {"model": ErrorOut, "description": "no such product"},
            **E422,
            429: {
                "model": ErrorOut,
                "description": "MAX_UNPAID_ORDERS unpaid orders held, or ordering too fast",
            },
            503: {"model": ErrorOut, "description": "no free deposit address"},
            **EBODY,
        },
        tags=["buyers"],
    )
    def create_order(body: OrderCreate, username: Buyer, request: Request, rt: Rt) -> OrderCreated:
        s = rt.settings
        ip = client_ip(request)
        for window, key, setting in (
            (rt.orders_by_ip, ip, "ORDER_MAX_PER_IP"),
            (rt.orders_by_buyer, username, "ORDER_MAX_PER_BUYER"),
        ):
            wait = window.hit(key)
            if wait is not None:
                if window is rt.orders_by_buyer:
                    rt.orders_by_ip.give_back(ip)  # refused: the address's place is not used
                metrics.THROTTLED.labels("order").inc()
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    f"too many orders: at most {window.limit} per {s.order_window_s:g} s"
                    f" ({setting}); try again later",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
        return rt.orders.create(username, body.product_id, body.hours)

    @app.delete(
        "/api/orders/{order_id}",
        status_code=204,
        response_class=Response,
        summary="Cancel an unpaid order: its deposit address is free again at once",
        responses={
            **E401,
            404: {"model": ErrorOut, "description": "not yours"},
            409: {"model": ErrorOut, "description": "a payment arrived or is on its way"},
            **E429,
            **E503,
        },
        tags=["buyers"],
    )
    def cancel_order(order_id: str, username: Buyer, rt: Rt) -> Response:
        # A cancellation asks the node: it counts against the buyer's order throttle too.
        wait = rt.orders_by_buyer.hit(username)
        if wait is not None:
            metrics.THROTTLED.labels("order").inc()
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                "too many orders and cancellations (ORDER_MAX_PER_BUYER); try again later",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        rt.orders.cancel(username, order_id)
        return Response(status_code=204)

    @app.get(
        "/api/orders",
        response_model=list[OrderOut],
        summary="The buyer's own orders, newest first",
        responses={**E401, **E429},
        tags=["buyers"],
    )
    def list_orders(username: Buyer, rt: Rt) -> list[OrderOut]:
        return rt.orders.list_for(username)

    @app.get(
        "/api/orders/{order_id}",
        response_model=OrderOut,
        summary="One of the buyer's orders with its payment status",
        responses={**E401, 404: {"model": ErrorOut, "description": "not yours"}, **E429},
        tags=["buyers"],
    )
    def get_order(order_id: str, username: Buyer, rt: Rt) -> OrderOut:
        return rt.orders.get(username, order_id)

    @app.get(
        "/api/grants",
        response_model=list[GrantOut],
        summary="The buyer's active grants",
        responses={**E401, **E429},
        tags=["buyers"],
    )
    def list_grants(username: Buyer, rt: Rt) -> list[GrantOut]:
        return rt.grants.active_for(username)

    @app.get(
        "/api/payments",
        response_model=list[PaymentOut],
        summary="Every payment seen, matched or not, newest first (admin)",
        dependencies=ADMIN,
        responses={**E401},
        tags=["admin"],
    )
    def list_payments(
        rt: Rt,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> list[PaymentOut]:
        return rt.payments.list(limit, offset)

    @app.post(
        "/api/deposit-addresses",
        response_model=DepositAddressesLoaded,
        summary="Add deposit addresses to the pool (admin); invalid and spent ones are refused",
        dependencies=ADMIN,
        responses={**E401, **E422, **E503, **EBODY},
        tags=["admin"],
    )
    def add_deposit_addresses(body: DepositAddressesIn, rt: Rt) -> DepositAddressesLoaded:
        result = rt.pool.load(body.addresses)
        return DepositAddressesLoaded(
            added=result.added, already_known=result.already_known, refused=result.refused
        )

    @app.get(
        "/api/deposit-addresses",
        response_model=DepositAddressList,
        summary="The deposit-address pool: counts by state and the addresses (admin)",
        dependencies=ADMIN,
        responses={**E401, **E422},
        tags=["admin"],
    )
    def list_deposit_addresses(
        rt: Rt,
        state: Annotated[AddressState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> DepositAddressList:
        docs = rt.pool.page(state, limit, offset)
        return DepositAddressList(
            counts=rt.pool.refresh_gauge(),
            addresses=[
                DepositAddressOut(
                    address=str(d["_id"]),
                    state=d["state"],
                    order_id=d.get("order_id"),
                    confirmed_iota=int(d.get("accounted_iota", 0)),
                )
                for d in docs
            ],
        )

    @app.post(
        "/api/deposit-addresses/swept",
        status_code=204,
        response_class=Response,
        summary="Mark closed addresses swept by the seller (admin); never handed out again",
        dependencies=ADMIN,
        responses={
            **E401,
            404: {"model": ErrorOut, "description": "not in the pool"},
            409: {"model": ErrorOut, "description": "an address is not closed"},
            **E422,
            **EBODY,
        },
        tags=["admin"],
    )
    def mark_swept(body: SweptIn, rt: Rt) -> Response:
        rt.pool.mark_swept(body.addresses, body.bundle)
        return Response(status_code=204)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        tags=["health"],
    )
    def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
