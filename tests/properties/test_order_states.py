"""The order's record (billing/order_record.py): every status reachable, no value counted twice,
no step back from confirmed, the unpaid place given back once and only when paid in full."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from broker_auth.billing.order_record import (
    Cancelled,
    CancelWithdrawn,
    Expired,
    FreeUnpaidPlace,
    OrderEvent,
    OrderRecord,
    PaymentConfirmed,
    PendingSeen,
    StatusChanged,
    WatchThroughLateWindow,
    WindowClosed,
    apply,
    current,
)

T0 = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
WINDOW = dt.timedelta(hours=1)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def order(amount: int = 500) -> OrderRecord:
    return OrderRecord(amount_iota=amount, expires_at=T0 + WINDOW)


def run(record: OrderRecord, events: list[OrderEvent]) -> tuple[OrderRecord, list[object]]:
    effects: list[object] = []
    for event in events:
        record, done = apply(record, event)
        effects.extend(done)
    return record, effects


minutes = st.floats(min_value=0, max_value=180, allow_nan=False)
events = st.one_of(
    st.builds(
        PaymentConfirmed,
        st.sampled_from(["p1", "p2", "p3", "p4"]),
        st.integers(min_value=1, max_value=400),
        minutes.map(at),
    ),
    st.builds(
        PendingSeen,
        st.integers(min_value=0, max_value=600),
        st.integers(min_value=0, max_value=600),
        minutes.map(at),
    ),
    st.builds(Expired, minutes.map(at)),
    st.builds(Cancelled, minutes.map(at)),
    st.builds(CancelWithdrawn, minutes.map(at)),
    st.builds(WindowClosed, minutes.map(at)),
)


def test_every_status_is_reachable() -> None:
    fresh = order()
    assert fresh.status == "pending"
    seen, _ = run(fresh, [PendingSeen(200, 0, at(1))])
    assert seen.status == "unconfirmed" and seen.paid_iota == 200
    paid, _ = run(seen, [PaymentConfirmed("p1", 200, at(2)), PendingSeen(0, 0, at(2))])
    assert paid.status == "confirmed" and paid.confirmed_iota == 200 == paid.paid_iota
    assert run(fresh, [Expired(at(61))])[0].status == "expired"
    assert run(fresh, [Cancelled(at(5))])[0].status == "cancelled"
    # The view of a stored record moves with the clock alone.
    assert current(fresh, at(59)).status == "pending"
    assert current(fresh, at(60)).status == "expired"


def test_a_payment_on_its_way_that_vanishes_leaves_the_order_as_it_was() -> None:
    record, _ = run(order(), [PendingSeen(500, 0, at(1)), PendingSeen(0, 0, at(2))])
    assert record.status == "pending" and record.paid_iota == 0
    record, _ = run(record, [PendingSeen(500, 0, at(70)), PendingSeen(0, 0, at(71))])
    assert record.status == "expired"


def test_late_payment_after_expiry_still_counts() -> None:
    record, effects = run(order(), [Expired(at(61)), PaymentConfirmed("p1", 500, at(300))])
    assert record.status == "confirmed" and record.confirmed_iota == 500
    assert effects.count(WatchThroughLateWindow()) == 1
    assert effects.count(FreeUnpaidPlace()) == 1


def test_dust_does_not_give_the_unpaid_place_back() -> None:
    record, effects = run(order(500), [PaymentConfirmed("p1", 1, at(1))])
    assert record.status == "confirmed" and record.fully_paid_at is None
    assert FreeUnpaidPlace() not in effects
    record, effects = run(record, [PaymentConfirmed("p2", 499, at(2))])
    assert record.fully_paid_at == at(2) and effects.count(FreeUnpaidPlace()) == 1


def test_cancel_loses_to_a_payment_and_can_be_withdrawn() -> None:
    paid, _ = run(order(), [PaymentConfirmed("p1", 10, at(1))])
    assert run(paid, [Cancelled(at(2))])[0] == paid
    cancelled, _ = run(order(), [Cancelled(at(1))])
    assert cancelled.status == "cancelled"
    back, _ = run(cancelled, [CancelWithdrawn(at(1))])
    assert back.status == "pending" and back.cancelled_at is None
    # A payment that won the race turns a cancelled order into a paid one.
    won, _ = run(cancelled, [PaymentConfirmed("p1", 500, at(2))])
    assert won.status == "confirmed"


@settings(max_examples=400, deadline=None)
@given(st.lists(events, max_size=25))
def test_no_double_count_and_no_step_back(history: list[OrderEvent]) -> None:
    record = order()
    amounts: dict[str, int] = {}
    late_window_effects = place_effects = 0
    for event in history:
        before = record
        record, effects = apply(record, event)
        if isinstance(event, PaymentConfirmed) and event.payment_id not in amounts:
            amounts[event.payment_id] = event.amount_iota
        # Confirmed value is the sum of distinct payments, each once; it never goes down.
        assert record.confirmed_iota == sum(amounts.values())
        assert record.confirmed_iota >= before.confirmed_iota
        assert record.paid_iota >= record.confirmed_iota
        if before.status == "confirmed":
            assert record.status == "confirmed"
        if before.status == "expired" and record.confirmed_iota == 0 and record.paid_iota == 0:
            assert record.status in {"expired", "cancelled"}
        # Applying the same event again changes nothing.
        assert apply(record, event) == (record, [])
        for effect in effects:
            if isinstance(effect, StatusChanged):
                assert (effect.old, effect.new) == (before.status, record.status)
        late_window_effects += effects.count(WatchThroughLateWindow())
        place_effects += effects.count(FreeUnpaidPlace())
    assert late_window_effects == (1 if amounts else 0)
    assert place_effects == (1 if record.confirmed_iota >= record.amount_iota else 0)
    assert (record.fully_paid_at is not None) == (record.confirmed_iota >= record.amount_iota)
