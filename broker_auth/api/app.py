"""The app factory: `create_app(settings)` builds the FastAPI app of broker_auth.

Handlers are plain `def`s: pymongo and the control client block, so Starlette runs them in
its thread pool. Every error is JSON `{"detail": ...}`: bad input is a 4xx, an unavailable
dependency a 503, never a 500 (see `errors`). The routes, one module per resource, are in
`routes/`; the buyer's web portal is mounted at / (see broker_auth/portal).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from fastapi import FastAPI

from broker_auth.api import routes
from broker_auth.api.errors import install_error_handlers
from broker_auth.api.middleware import BodyLimit, OneValuePerQueryKey, count_requests
from broker_auth.api.routes.deposit_addresses import IMPORT_PATHS
from broker_auth.portal import mount_portal
from broker_auth.service import Runtime
from broker_auth.settings import Settings

DESCRIPTION = (
    "Buyers register, order live access to a product, pay IOTA to the order's own "
    "deposit address, and get the product's MQTT topics for the time paid (what the "
    "ledger confirms on that address counts; the tag is only shown to wallets). "
    "Admin calls carry `Authorization: Bearer <BROKER_ADMIN_TOKEN>`; buyer calls "
    "carry `Authorization: Bearer <session token>` (from `POST /api/sessions`) or "
    "HTTP Basic with the buyer's username and login password (scripts). Times are "
    'RFC 3339 UTC; errors are JSON `{"detail": ...}`.'
)


def runtime_lifespan(
    settings: Settings,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the Runtime is built and started before the first request."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime(settings)
        await anyio.to_thread.run_sync(rt.start)
        app.state.runtime = rt
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(rt.stop)

    return lifespan


def create_app(settings: Settings) -> FastAPI:
    app = FastAPI(
        title="broker_auth",
        summary="Accounts, products, orders, IOTA payments and time-limited live access",
        description=DESCRIPTION,
        version="1.0.0",
        lifespan=runtime_lifespan(settings),
        # Swagger UI from this origin's own files (api/docs.py); no ReDoc, no CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.middleware("http")(count_requests)
    imports = dict.fromkeys(IMPORT_PATHS, settings.max_import_body_bytes)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, per_path=imports)
    app.add_middleware(OneValuePerQueryKey)
    install_error_handlers(app)
    routes.install(app)
    # The buyer's web portal at / (static files; see broker_auth/portal).
    mount_portal(app)
    return app
