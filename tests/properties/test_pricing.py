"""What a payment buys (billing/pricing.py): the order's quote covers its amount only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker_auth.billing.pricing import price_payment

iota = st.integers(min_value=0, max_value=10**9)
price = st.integers(min_value=1, max_value=10**7)


def test_examples_from_the_readme() -> None:
    # Ordered 36 iota at 3600/h (36 s); the product now costs 7200/h.
    exact = price_payment(0, 36, 0, 36, 3600, 7200)
    assert (exact.ordered_iota, exact.extra_iota, exact.seconds) == (36, 0, 36.0)
    over = price_payment(0, 72, 0, 36, 3600, 7200)  # 36 s + 36 iota at today's price: 18 s
    assert (over.ordered_iota, over.extra_iota, over.seconds) == (36, 36, 54.0)
    partial = price_payment(0, 18, 0, 36, 3600, 7200)
    assert partial.seconds == 18.0 and partial.extra_iota == 0
    later = price_payment(36, 108, 0, 36, 3600, 7200)  # a top-up after the order was paid
    assert (later.ordered_iota, later.extra_iota, later.seconds) == (0, 72, 36.0)
    off_sale = price_payment(0, 200, 0, 36, 3600, None)  # the product was disabled
    assert (off_sale.seconds, off_sale.refund_due_iota) == (36.0, 164)
    reused = price_payment(5, 41, 5, 36, 3600, 7200)  # 5 iota of stray value were there before
    assert (reused.ordered_iota, reused.extra_iota) == (36, 0)


@given(
    steps=st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=8),
    base=iota,
    amount=st.integers(min_value=1, max_value=10**6),
    order_price=price,
    current=st.one_of(st.none(), price),
)
def test_the_quote_covers_exactly_the_ordered_amount_however_the_value_arrives(
    steps: list[int], base: int, amount: int, order_price: int, current: int | None
) -> None:
    """Split into any number of payments, the order's price buys exactly min(paid, amount);
    the rest buys at today's price or is refund due, never both, never lost."""
    at = base
    ordered = extra = refund = 0
    seconds = 0.0
    for step in steps:
        p = price_payment(at, at + step, base, amount, order_price, current)
        assert p.ordered_iota + p.extra_iota + p.refund_due_iota == step
        assert p.extra_iota == 0 or p.refund_due_iota == 0
        ordered, extra, refund = (
            ordered + p.ordered_iota,
            extra + p.extra_iota,
            refund + (p.refund_due_iota),
        )
        seconds += p.seconds
        at += step
    paid = at - base
    assert ordered == min(paid, amount)
    beyond = paid - ordered
    assert (extra, refund) == ((beyond, 0) if current is not None else (0, beyond))
    expected = ordered * 3600 / order_price + (extra * 3600 / current if current else 0.0)
    assert seconds == pytest.approx(expected, rel=1e-9)
