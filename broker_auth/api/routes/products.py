"""Products: the buyers' catalogue, and the seller's creation, list and changes (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from broker_auth.api.auth import ADMIN, Rt
from broker_auth.api.errors import E401_ADMIN, E404, E409, E422, E503, EBODY
from broker_auth.schemas import ProductAdminOut, ProductIn, ProductOut, ProductPatch

router = APIRouter()


@router.get(
    "/api/products",
    response_model=list[ProductOut],
    summary="Products on sale",
    tags=["products"],
)
def list_products(rt: Rt) -> list[ProductOut]:
    return rt.products.list()


@router.post(
    "/api/products",
    response_model=ProductOut,
    status_code=201,
    summary="Create a product (admin)",
    dependencies=ADMIN,
    responses={**E401_ADMIN, **E409, **E422, **E503, **EBODY},
    tags=["admin"],
)
def create_product(body: ProductIn, rt: Rt) -> ProductOut:
    return rt.products.create(body)


@router.get(
    "/api/products/all",
    response_model=list[ProductAdminOut],
    summary="Every product with its sale state, disabled ones too (admin)",
    dependencies=ADMIN,
    responses=E401_ADMIN,
    tags=["admin"],
)
def list_all_products(rt: Rt) -> list[ProductAdminOut]:
    return list(rt.products.list_all())


@router.patch(
    "/api/products/{product_id}",
    response_model=ProductAdminOut,
    summary="Change a product's price, description or sale (admin); new orders only",
    dependencies=ADMIN,
    responses={**E401_ADMIN, **E404, **E422, **EBODY},
    tags=["admin"],
)
def update_product(product_id: str, body: ProductPatch, rt: Rt) -> ProductAdminOut:
    return rt.products.update(product_id, body)
