"""Payments (admin): every payment seen, the exact revenue per day, and the CSV export."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from broker_auth.api.auth import ADMIN, Rt
from broker_auth.api.errors import E401_ADMIN, E422
from broker_auth.errors import InvalidError
from broker_auth.infra.clock import as_utc
from broker_auth.schemas import PaymentOut, RevenueRow

router = APIRouter(tags=["admin"], dependencies=ADMIN)

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
    """A `from`/`to` bound as a UTC time (a day is its midnight UTC); None when not given."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidError(f"{name}: not a valid date or time") from None
    return as_utc(parsed) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@router.get(
    "/api/payments",
    response_model=list[PaymentOut],
    summary="Every payment seen, matched or not, newest first (admin)",
    responses=E401_ADMIN,
)
def list_payments(
    rt: Rt,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[PaymentOut]:
    return rt.payments.list(limit, offset)


@router.get(
    "/api/revenue",
    response_model=list[RevenueRow],
    summary="Confirmed revenue per UTC day and product, exact, from the payment records (admin)",
    responses={**E401_ADMIN, **E422},
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
    responses={**E401_ADMIN, **E422, 200: {"content": {"text/csv": {}}}},
)
def payments_csv(rt: Rt, since: Since = None, until: Until = None) -> StreamingResponse:
    rows = rt.revenue.csv_rows(parse_bound(since, "from"), parse_bound(until, "to"))
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="payments.csv"'},
    )
