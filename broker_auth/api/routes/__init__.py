"""The API's routes, one module per resource; `install` adds them all to the app."""

from __future__ import annotations

from fastapi import FastAPI

from broker_auth.api import docs
from broker_auth.api.routes import (
    accounts,
    deposit_addresses,
    devices,
    grants,
    health,
    orders,
    payments,
    products,
    quotes,
)

# The order of the OpenAPI schema (and so of /docs).
ROUTERS = (
    health.router,
    accounts.router,
    products.router,
    devices.router,
    orders.router,
    quotes.router,
    grants.router,
    payments.router,
    deposit_addresses.router,
    docs.router,
)


def install(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)
