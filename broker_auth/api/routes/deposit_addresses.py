"""The deposit-address pool (admin): import addresses, list them, mark swept ones."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from broker_auth.api.auth import ADMIN, Rt
from broker_auth.api.errors import E401_ADMIN, E422, E503, EBODY, error
from broker_auth.billing.pool import AddressState
from broker_auth.schemas import (
    DepositAddressesIn,
    DepositAddressesLoaded,
    DepositAddressList,
    DepositAddressOut,
    SweptIn,
)

router = APIRouter(tags=["admin"], dependencies=ADMIN)
# Imports carry many addresses: these paths get MAX_IMPORT_BODY_BYTES, not MAX_BODY_BYTES.
IMPORT_PATHS = ("/api/deposit-addresses", "/api/deposit-addresses/swept")


def address_out(doc: Mapping[str, Any]) -> DepositAddressOut:
    """The answer for one stored pool document."""
    return DepositAddressOut(
        address=str(doc["_id"]),
        state=doc["state"],
        order_id=doc.get("order_id"),
        confirmed_iota=int(doc.get("accounted_iota", 0)),
    )


@router.post(
    "/api/deposit-addresses",
    response_model=DepositAddressesLoaded,
    summary="Add deposit addresses to the pool (admin); invalid and spent ones are refused",
    responses={**E401_ADMIN, **E422, **E503, **EBODY},
)
def add_deposit_addresses(body: DepositAddressesIn, rt: Rt) -> DepositAddressesLoaded:
    result = rt.pool.load(body.addresses)
    return DepositAddressesLoaded(
        added=result.added, already_known=result.already_known, refused=result.refused
    )


@router.get(
    "/api/deposit-addresses",
    response_model=DepositAddressList,
    summary="The deposit-address pool: counts by state and the addresses (admin)",
    responses={**E401_ADMIN, **E422},
)
def list_deposit_addresses(
    rt: Rt,
    state: Annotated[AddressState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DepositAddressList:
    docs = rt.pool.page(state, limit, offset)
    return DepositAddressList(counts=rt.pool.counts(), addresses=[address_out(d) for d in docs])


@router.post(
    "/api/deposit-addresses/swept",
    status_code=204,
    response_class=Response,
    summary="Mark closed addresses swept by the seller (admin); never handed out again",
    responses={
        **E401_ADMIN,
        **error(404, "not in the pool"),
        **error(409, "an address is not closed"),
        **E422,
        **EBODY,
    },
)
def mark_swept(body: SweptIn, rt: Rt) -> Response:
    rt.pool.mark_swept(body.addresses, body.bundle)
    return Response(status_code=204)
