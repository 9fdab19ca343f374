"""A buyer's orders: place one (throttled), cancel an unpaid one, list them, read one."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from broker_auth.api.auth import Buyer, Rt, client_ip
from broker_auth.api.errors import E401, E422, E429, E503, EBODY, error, too_many
from broker_auth.schemas import OrderCreate, OrderCreated, OrderOut
from broker_auth.service import Runtime

router = APIRouter(tags=["buyers"])
E404_NOT_YOURS = error(404, "not yours")


def count_order(rt: Runtime, username: str, ip: str) -> None:
    """Takes the order's place in the per-address and per-buyer windows, or refuses (429)."""
    for window, key, setting in (
        (rt.throttles.orders_by_ip, ip, "ORDER_MAX_PER_IP"),
        (rt.throttles.orders_by_buyer, username, "ORDER_MAX_PER_BUYER"),
    ):
        wait = window.hit(key)
        if wait is not None:
            if window is rt.throttles.orders_by_buyer:
                rt.throttles.orders_by_ip.give_back(ip)  # refused: the address's place is not used
            raise too_many(
                "order",
                f"too many orders: at most {window.limit} per {rt.settings.order_window_s:g} s"
                f" ({setting}); try again later",
                wait,
            )


@router.post(
    "/api/orders",
    response_model=OrderCreated,
    status_code=201,
    summary="Order live access: pay amount_iota to address with tag",
    responses={
        **E401,
        **error(404, "no such product"),
        **error(409, "this product is not on sale"),
        **E422,
        **error(429, "MAX_UNPAID_ORDERS unpaid orders held, or ordering too fast"),
        **error(503, "no free deposit address"),
        **EBODY,
    },
)
def create_order(body: OrderCreate, username: Buyer, request: Request, rt: Rt) -> OrderCreated:
    count_order(rt, username, client_ip(request))
    return rt.orders.create(username, body.product_id, body.hours)


@router.delete(
    "/api/orders/{order_id}",
    status_code=204,
    response_class=Response,
    summary="Cancel an unpaid order: its deposit address is free again at once",
    responses={
        **E401,
        **E404_NOT_YOURS,
        **error(409, "a payment arrived or is on its way"),
        **E429,
        **E503,
    },
)
def cancel_order(order_id: str, username: Buyer, rt: Rt) -> Response:
    # A cancellation asks the node: it counts against the buyer's order throttle too.
    wait = rt.throttles.orders_by_buyer.hit(username)
    if wait is not None:
        raise too_many(
            "order",
            "too many orders and cancellations (ORDER_MAX_PER_BUYER); try again later",
            wait,
        )
    rt.cancels.ask(username, order_id)  # carried out by the payment watcher
    return Response(status_code=204)


@router.get(
    "/api/orders",
    response_model=list[OrderOut],
    summary="The buyer's own orders, newest first",
    responses={**E401, **E429},
)
def list_orders(username: Buyer, rt: Rt) -> list[OrderOut]:
    return rt.orders.list_for(username)


@router.get(
    "/api/orders/{order_id}",
    response_model=OrderOut,
    summary="One of the buyer's orders with its payment status",
    responses={**E401, **E404_NOT_YOURS, **E429},
)
def get_order(order_id: str, username: Buyer, rt: Rt) -> OrderOut:
    return rt.orders.get(username, order_id)
