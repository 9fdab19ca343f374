"""The seller's admin calls beyond creation: devices, product changes, exact revenue, CSV."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse

from broker_auth.api.auth import require_admin, runtime
from broker_auth.api.schemas import (
    DeviceOut,
    DevicePassword,
    ErrorOut,
    GrantAdminOut,
    ProductAdminOut,
    ProductPatch,
    RevenueRow,
)
from broker_auth.errors import InvalidError
from broker_auth.infra.clock import as_utc
from broker_auth.service import Runtime

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])
Rt = Annotated[Runtime, Depends(runtime)]
E401: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut, "description": "admin token"}}
E404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "not found"}}
E422: dict[int | str, dict[str, Any]] = {422: {"model": ErrorOut, "description": "invalid input"}}
E503: dict[int | str, dict[str, Any]] = {503: {"model": ErrorOut, "description": "unavailable"}}
EBODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "body is not UTF-8 JSON"},
    413: {"model": ErrorOut, "description": "body over MAX_BODY_BYTES"},
}
# A day or an RFC 3339 time with its offset; read strictly (a bare number is no date here).
BOUND_PATTERN = r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$"
Since = Annotated[
    str | None,
    Query(alias="from", pattern=BOUND_PATTERN, description="YYYY-MM-DD or RFC 3339, inclusive"),
]
Until = Annotated[
    str | None,
    Query(alias="to", pattern=BOUND_PATTERN, description="YYYY-MM-DD or RFC 3339, exclusive"),
]


def parse_bound(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidError(f"{name}: not a valid date or time") from None
    return as_utc(parsed) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@router.get(
    "/api/devices",
    response_model=list[DeviceOut],
    summary="Devices with their newest reading time (admin)",
    responses=E401,
)
def list_devices(rt: Rt) -> list[DeviceOut]:
    last = rt.last_readings.by_device()
    return [
        DeviceOut(
            device_id=str(d["_id"]),
            username=str(d["username"]),
            enabled=bool(d.get("enabled", True)),
            created_at=as_utc(d["created_at"]),
            last_reading_at=last.get(str(d["_id"])),
        )
        for d in rt.devices.list()
    ]


@router.post(
    "/api/devices/{device_id}/password",
    response_model=DevicePassword,
    status_code=201,
    summary="Rotate a device's MQTT password (admin); the device is cut until it uses it",
    responses={**E401, **E404, **E503},
)
def rotate_device_password(device_id: str, rt: Rt) -> DevicePassword:
    return DevicePassword(password=rt.devices.rotate_password(device_id))


@router.delete(
    "/api/devices/{device_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a device (admin): cut at once, no more logins; its readings stay",
    responses={**E401, **E404, **E503},
)
def delete_device(device_id: str, rt: Rt) -> Response:
    rt.devices.delete(device_id)
    return Response(status_code=204)


@router.get(
    "/api/products/all",
    response_model=list[ProductAdminOut],
    summary="Every product with its sale state, disabled ones too (admin)",
    responses=E401,
)
def list_all_products(rt: Rt) -> list[ProductAdminOut]:
    return list(rt.products.list_all())


@router.patch(
    "/api/products/{product_id}",
    response_model=ProductAdminOut,
    summary="Change a product's price, description or sale (admin); new orders only",
    responses={**E401, **E404, **E422, **EBODY},
)
def update_product(product_id: str, body: ProductPatch, rt: Rt) -> ProductAdminOut:
    return rt.products.update(product_id, body)


@router.get(
    "/api/grants/all",
    response_model=list[GrantAdminOut],
    summary="Every buyer's active grants (admin)",
    responses=E401,
)
def list_all_grants(rt: Rt) -> list[GrantAdminOut]:
    return rt.grants.active_all()


@router.get(
    "/api/revenue",
    response_model=list[RevenueRow],
    summary="Confirmed revenue per UTC day and product, exact, from the payment records (admin)",
    responses={**E401, **E422},
)
def revenue(
    rt: Rt,
    since: Since = None,
    until: Until = None,
    product_id: Annotated[str | None, Query(max_length=64)] = None,
) -> list[RevenueRow]:
    return rt.revenue.per_day(parse_bound(since, "from"), parse_bound(until, "to"), product_id)


@router.get(
    "/api/payments.csv",
    summary="Every payment, matched and unmatched, as CSV (admin)",
    response_class=StreamingResponse,
    responses={**E401, **E422, 200: {"content": {"text/csv": {}}}},
)
def payments_csv(rt: Rt, since: Since = None, until: Until = None) -> StreamingResponse:
    rows = rt.revenue.csv_rows(parse_bound(since, "from"), parse_bound(until, "to"))
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="payments.csv"'},
    )
