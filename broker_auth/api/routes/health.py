"""Health: `GET /healthz` (each dependency's state) and `GET /metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.errors import PyMongoError

from broker_auth.api.auth import Rt
from broker_auth.infra import metrics
from broker_auth.schemas import Health
from broker_auth.service import Runtime

router = APIRouter(tags=["health"])


def health_of(rt: Runtime) -> Health:
    """The service's state: degraded when a dependency is down or the pool is empty."""
    try:
        rt.store.ping()
        mongo = "ok"
    except PyMongoError:
        mongo = "down"
    metrics.MONGO_UP.set(1 if mongo == "ok" else 0)
    broker = "ok" if rt.dynsec.ready else "down"
    node = "ok" if rt.watcher.node_ok else "down"
    free = rt.pool.free_count() if mongo == "ok" else 0
    pool = "empty" if free == 0 else "low" if free < rt.settings.deposit_pool_low_water else "ok"
    healthy = mongo == broker == node == "ok" and pool != "empty"
    return Health(
        status="ok" if healthy else "degraded",
        mongo=mongo,
        broker=broker,
        node=node,
        deposit_addresses=pool,
        free_addresses=free,
        leader=rt.leader.leads(),
    )


@router.get(
    "/healthz",
    response_model=Health,
    summary="Service health and each dependency's state",
    responses={503: {"model": Health, "description": "a dependency is down"}},
)
def healthz(rt: Rt) -> JSONResponse:
    body = health_of(rt)
    return JSONResponse(body.model_dump(), 200 if body.status == "ok" else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def prometheus() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
