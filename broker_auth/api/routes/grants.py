"""Grants: a buyer's active access, and every buyer's (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from broker_auth.api.auth import ADMIN, Buyer, Rt
from broker_auth.api.errors import E401, E401_ADMIN, E429
from broker_auth.schemas import GrantAdminOut, GrantOut

router = APIRouter()


@router.get(
    "/api/grants",
    response_model=list[GrantOut],
    summary="The buyer's active grants",
    responses={**E401, **E429},
    tags=["buyers"],
)
def list_grants(username: Buyer, rt: Rt) -> list[GrantOut]:
    return rt.grants.active_for(username)


@router.get(
    "/api/grants/all",
    response_model=list[GrantAdminOut],
    summary="Every buyer's active grants (admin)",
    dependencies=ADMIN,
    responses=E401_ADMIN,
    tags=["admin"],
)
def list_all_grants(rt: Rt) -> list[GrantAdminOut]:
    return rt.grants.active_all()
