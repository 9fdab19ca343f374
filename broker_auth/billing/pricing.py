"""What a confirmed payment buys: an order is a quote for the amount ordered, nothing more.

The order's price covers the value up to its `amount_iota` (partial payments buy time in
proportion, in time or late inside the watch window). Value beyond it (an overpayment, a
top-up, a later payment to the same address) buys at the product's price at the moment it is
confirmed, and nothing if the product is off sale by then: that part is `refund_due` for the
seller to settle. So an old order is never a lasting price lock.

A payment is one step of the address's confirmed value, from `from_iota` to `to_iota`; the
order's own value starts at `base_iota` (what the address held when the order took it, non-zero
only for an address that came back to the pool with stray value on it).
"""

from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class Priced:
    ordered_iota: int  # covered by the order's price
    extra_iota: int  # bought at the product's price when confirmed
    refund_due_iota: int  # bought nothing: the product was off sale
    extra_price_iota_per_hour: int | None  # the price the extra was bought at
    seconds: float  # access time the payment buys

    def as_fields(self) -> dict[str, object]:
        return {
            "ordered_iota": self.ordered_iota,
            "extra_iota": self.extra_iota,
            "refund_due_iota": self.refund_due_iota,
            "extra_price_iota_per_hour": self.extra_price_iota_per_hour,
            "grant_seconds": self.seconds,
        }


def price_payment(
    from_iota: int,
    to_iota: int,
    base_iota: int,
    amount_iota: int,
    order_price: int,
    current_price: int | None,
) -> Priced:
    """Split the step [from_iota, to_iota) of an address's value by the order's quote.

    `current_price` is the product's price now, None when it is off sale.
    """
    if to_iota <= from_iota:
        return Priced(0, 0, 0, None, 0.0)
    quote_end = base_iota + amount_iota
    ordered = max(0, min(to_iota, quote_end) - max(from_iota, base_iota))
    beyond = (to_iota - from_iota) - ordered
    seconds = ordered * SECONDS_PER_HOUR / order_price
    if beyond == 0:
        return Priced(ordered, 0, 0, None, seconds)
    if current_price is None or current_price <= 0:
        return Priced(ordered, 0, beyond, None, seconds)
    seconds += beyond * SECONDS_PER_HOUR / current_price
    return Priced(ordered, beyond, 0, current_price, seconds)
