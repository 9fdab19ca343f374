"""Sealed purchases over HTTP: the seller's key, an anonymous quote, and its status by id.

Nothing here takes credentials: the buyer seals them into the payment (broker_auth/sealed/).
A quote holds a deposit address like an order, so it is throttled and capped per client
address (ORDER_MAX_PER_IP, MAX_UNPAID_QUOTES) and released when never paid.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from broker_auth.api.auth import Rt, client_ip
from broker_auth.api.errors import E422, EBODY, error, too_many
from broker_auth.schemas import OrderCreate, QuoteCreated, QuoteOut, SellerKeyOut
from broker_auth.sealed.keys import ALG

router = APIRouter(tags=["sealed purchases"])


@router.get(
    "/api/seller-key",
    response_model=SellerKeyOut,
    summary="The seller's X25519 key: seal the MQTT login you want to it (also on info/seller-key)",
)
def seller_key(rt: Rt) -> SellerKeyOut:
    return SellerKeyOut(public_key=rt.seller_keys.public_key_b64, alg=ALG)


@router.post(
    "/api/quotes",
    response_model=QuoteCreated,
    status_code=201,
    summary="Buy without an account: pay amount_iota to address with the sealed message",
    responses={
        **error(404, "no such product"),
        **error(409, "this product is not on sale"),
        **E422,
        **error(429, "MAX_UNPAID_QUOTES unpaid quotes held by this address, or asking too fast"),
        **error(503, "no free deposit address"),
        **EBODY,
    },
)
def create_quote(body: OrderCreate, request: Request, rt: Rt) -> QuoteCreated:
    ip = client_ip(request)
    wait = rt.throttles.orders_by_ip.hit(ip)
    if wait is not None:
        raise too_many(
            "order",
            f"too many orders and quotes from this address: at most"
            f" {rt.throttles.orders_by_ip.limit} per {rt.settings.order_window_s:g} s"
            " (ORDER_MAX_PER_IP); try again later",
            wait,
        )
    return rt.orders.create_quote(ip, body.product_id, body.hours)


@router.get(
    "/api/quotes/{quote_id}",
    response_model=QuoteOut,
    summary="A quote's payment status, and the MQTT username once its sealed message was accepted",
    responses={**error(404, "no such quote")},
)
def get_quote(quote_id: str, rt: Rt) -> QuoteOut:
    return rt.orders.quote(quote_id)
