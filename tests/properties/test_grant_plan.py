"""Crediting as a plan (access/crediting.py), without MongoDB: the grant's new end and effects."""

from __future__ import annotations

import datetime as dt

from hypothesis import assume, given
from hypothesis import strategies as st

from broker_auth.access.crediting import (
    CreditPlan,
    Purchase,
    credited_fields,
    plan_credit,
    purchase_of,
)
from broker_auth.infra.clock import truncate
from broker_auth.infra.db import Doc

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)

seconds = st.floats(min_value=0.001, max_value=10**7, allow_nan=False, allow_infinity=False)
offsets = st.floats(min_value=-(10**7), max_value=10**7, allow_nan=False, allow_infinity=False)
times = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(dt.UTC)
).map(truncate)


def purchase(secs: float = 60.0, pid: str = "pay-1") -> Purchase:
    return Purchase(pid, "alice", "p1", "live/p1/#", amount_iota=60, seconds=secs)


def grant(end: dt.datetime, active: bool = True, applied: list[str] | None = None) -> Doc:
    return {
        "_id": "alice/p1",
        "username": "alice",
        "product_id": "p1",
        "starts_at": end - dt.timedelta(hours=1),
        "expires_at": end,
        "active": active,
        "applied_payments": applied if applied is not None else ["pay-0"],
    }


def apply(plan: CreditPlan, doc: Doc | None) -> Doc | None:
    """What the store would hold after the plan's write (the compare-and-set succeeding)."""
    if plan.insert is not None:
        return dict(plan.insert)
    if plan.update is None or doc is None:
        return doc
    out = {**doc, **plan.update["$set"]}
    out["applied_payments"] = [*doc["applied_payments"], plan.update["$push"]["applied_payments"]]
    return out


def test_a_first_payment_starts_a_grant_now() -> None:
    plan = plan_credit(purchase(90), None, NOW)
    assert plan.event == "granted" and plan.add_role
    assert plan.new_end == NOW + dt.timedelta(seconds=90)
    assert plan.insert is not None and plan.match is None and plan.update is None
    assert plan.insert["_id"] == "alice/p1" and plan.insert["applied_payments"] == ["pay-1"]
    assert plan.insert["starts_at"] == NOW and plan.insert["active"] is True
    assert plan.notice is not None
    assert (plan.notice.username, plan.notice.event, plan.notice.product_id) == (
        "alice",
        "grant_started",
        "p1",
    )
    assert plan.notice.expires_at == plan.new_end


def test_a_payment_stacks_onto_a_running_grant() -> None:
    end = NOW + dt.timedelta(minutes=5)
    plan = plan_credit(purchase(60), grant(end), NOW)
    assert plan.event == "extended" and not plan.add_role
    assert plan.new_end == end + dt.timedelta(seconds=60)
    assert plan.update is not None and "starts_at" not in plan.update["$set"]
    assert plan.notice is not None and plan.notice.event == "grant_extended"
    # The write is guarded: the grant as read, and the payment not on it yet.
    assert plan.match == {
        "_id": "alice/p1",
        "expires_at": end,
        "active": True,
        "applied_payments": {"$ne": "pay-1"},
    }


def test_an_ended_grant_starts_again_now() -> None:
    ended = NOW - dt.timedelta(minutes=5)
    plan = plan_credit(purchase(60), grant(ended, active=False), NOW)
    assert plan.event == "granted" and plan.add_role  # revoked: the role was taken away
    assert plan.new_end == NOW + dt.timedelta(seconds=60)
    assert plan.update is not None and plan.update["$set"]["starts_at"] == NOW


def test_an_ended_grant_not_yet_revoked_keeps_its_role() -> None:
    ended = NOW - dt.timedelta(seconds=1)
    plan = plan_credit(purchase(60), grant(ended, active=True), NOW)
    assert plan.event == "granted" and not plan.add_role
    assert plan.new_end == NOW + dt.timedelta(seconds=60)


def test_a_payment_already_on_the_grant_counts_nothing() -> None:
    doc = grant(NOW + dt.timedelta(minutes=5), applied=["pay-0", "pay-1"])
    plan = plan_credit(purchase(60), doc, NOW)
    assert plan.applied_before and plan.event is None and plan.new_end is None
    assert (plan.insert, plan.match, plan.update, plan.notice) == (None, None, None, None)
    assert not plan.add_role


@given(secs=seconds, offset=offsets, active=st.booleans(), now=times)
def test_the_new_end_stacks_only_onto_a_running_grant(
    secs: float, offset: float, active: bool, now: dt.datetime
) -> None:
    end = truncate(now + dt.timedelta(seconds=offset))
    plan = plan_credit(purchase(secs), grant(end, active), now)
    running = active and end > now
    base = end if running else now
    assert plan.new_end == truncate(base + dt.timedelta(seconds=secs))
    assert plan.new_end is not None and plan.new_end > now
    assert plan.event == ("extended" if running else "granted")
    assert plan.add_role is (not active)
    assert plan.update is not None and plan.update["$set"]["expires_at"] == plan.new_end
    assert plan.update["$set"]["active"] is True
    assert plan.notice is not None and plan.notice.expires_at == plan.new_end


@given(
    amounts=st.lists(seconds, min_size=1, max_size=6),
    gaps=st.lists(st.floats(min_value=0, max_value=10**5), min_size=6, max_size=6),
    replays=st.lists(st.integers(min_value=0, max_value=5), max_size=6),
    start=times,
)
def test_each_payment_counts_once_however_often_it_is_credited(
    amounts: list[float], gaps: list[float], replays: list[int], start: dt.datetime
) -> None:
    """Credit payments in turn, some of them again later (after a crash): each id lands on
    the grant once, and a replay changes nothing."""
    doc: Doc | None = None
    now = start
    credited: list[Purchase] = []
    for i, secs in enumerate(amounts):
        now = truncate(now + dt.timedelta(seconds=gaps[i]))
        p = purchase(secs, f"pay-{i + 1}")
        plan = plan_credit(p, doc, now)
        assert not plan.applied_before
        doc = apply(plan, doc)
        credited.append(p)
        for j in replays:
            if j < len(credited):
                again = plan_credit(credited[j], doc, now)
                assert again.applied_before
                assert apply(again, doc) == doc
    assert doc is not None
    assert doc["applied_payments"] == [p.payment_id for p in credited]


@given(a=seconds, b=seconds, fraction=st.floats(min_value=0, max_value=0.99), now=times)
def test_payments_credited_while_the_grant_runs_add_up(
    a: float, b: float, fraction: float, now: dt.datetime
) -> None:
    first = plan_credit(purchase(a, "a"), None, now)
    assert first.new_end is not None
    later = truncate(now + dt.timedelta(seconds=a * fraction))
    assume(later < first.new_end)
    second = plan_credit(purchase(b, "b"), apply(first, None), later)
    assert second.event == "extended"
    assert second.new_end == truncate(first.new_end + dt.timedelta(seconds=b))


def test_seconds_come_from_the_payment_when_priced() -> None:
    order: Doc = {
        "username": "alice",
        "product_id": "p1",
        "topic_filter": "live/p1/#",
        "price_iota_per_hour": 3600,
    }
    priced = purchase_of({"_id": "x", "amount_iota": 100, "grant_seconds": 42.5}, order)
    assert priced.seconds == 42.5 and priced.amount_iota == 100
    assert priced.grant_id == "alice/p1" and priced.payment_id == "x"
    zero = purchase_of({"_id": "y", "amount_iota": 100, "grant_seconds": 0}, order)
    assert zero.seconds == 0.0  # off sale: nothing bought, not the order's price
    older = purchase_of({"_id": "z", "amount_iota": 100}, order)  # an older record
    assert older.seconds == 100.0


@given(
    amount=st.integers(min_value=0, max_value=10**9),
    price=st.integers(min_value=1, max_value=10**7),
    priced=st.one_of(st.none(), st.floats(min_value=0, max_value=10**7)),
)
def test_seconds_are_the_priced_ones_else_the_orders_price(
    amount: int, price: int, priced: float | None
) -> None:
    order: Doc = {
        "username": "u",
        "product_id": "p",
        "topic_filter": "live/p/#",
        "price_iota_per_hour": price,
    }
    payment: Doc = {"_id": "x", "amount_iota": amount}
    if priced is not None:
        payment["grant_seconds"] = priced
    got = purchase_of(payment, order).seconds
    assert got == (priced if priced is not None else amount * 3600 / price)


def test_the_payment_record_keeps_what_it_bought() -> None:
    fields = credited_fields(purchase(60), NOW)
    assert fields == {
        "credited": True,
        "credited_at": NOW,
        "grant_id": "alice/p1",
        "grant_seconds": 60.0,
    }


# -- instant access: provisional time on the grant -------------------------------------------
def test_converted_time_counts_from_the_provisional_start_so_the_end_does_not_move() -> None:
    """60 s bought, provisional since 10 s ago (until now + 50): confirmation now keeps the
    end where provisional access had it."""
    provisional = grant(NOW + dt.timedelta(seconds=50))
    provisional["paid_until"] = NOW - dt.timedelta(seconds=10)
    provisional["provisional_until"] = NOW + dt.timedelta(seconds=50)
    since = NOW - dt.timedelta(seconds=10)
    converted = Purchase("pay-1", "alice", "p1", "live/p1/#", 60, 60.0, provisional_since=since)
    plan = plan_credit(converted, provisional, NOW)
    assert plan.new_end == NOW + dt.timedelta(seconds=50)
    assert plan.update is not None and "provisional_until" in plan.update.get("$unset", {})


def test_confirmed_after_provisional_access_ended_gets_the_rest_only() -> None:
    """3600 s bought; provisional access ran 600 s and ended 100 s ago: 2900 s are left."""
    since = NOW - dt.timedelta(seconds=700)
    doc = grant(NOW - dt.timedelta(seconds=100))
    doc["paid_until"] = since
    p = Purchase("pay-1", "alice", "p1", "live/p1/#", 3600, 3600.0, provisional_since=since)
    plan = plan_credit(p, doc, NOW)
    assert plan.new_end == since + dt.timedelta(seconds=3600)


@given(seconds, st.floats(min_value=0, max_value=10**7), offsets, st.booleans())
def test_a_credit_never_ends_before_now_nor_gives_more_than_bought(
    secs: float, ago: float, paid_offset: float, other_running: bool
) -> None:
    since = truncate(NOW - dt.timedelta(seconds=ago))
    doc = grant(NOW + dt.timedelta(seconds=max(paid_offset, 1.0)))
    doc["paid_until"] = truncate(NOW + dt.timedelta(seconds=paid_offset))
    other = NOW + dt.timedelta(seconds=30) if other_running else None
    p = Purchase("pay-1", "alice", "p1", "live/p1/#", 60, secs, provisional_since=since)
    plan = plan_credit(p, doc, NOW, other)
    assert plan.new_end is not None and plan.new_end >= NOW - dt.timedelta(milliseconds=1)
    assert plan.update is not None
    paid_from = max(doc["paid_until"], since)
    added = (plan.update["$set"]["paid_until"] - paid_from).total_seconds()
    assert abs(added - secs) < 0.002  # counted once, from the later of paid end and since
    if other is not None:
        assert plan.new_end >= other
