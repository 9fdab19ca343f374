"""Instant access's risk rules (broker_auth/access/instant_access.py), without a node: the
attacks of the issue as data. Whatever the mix of bundles, buyers, orders and shared inputs, a
buyer never has more than the cap at risk, an input never buys twice, a double spend opens
nothing, and provisional time never outlasts its caps."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from broker_auth.access.instant_access import (
    Admitted,
    Candidate,
    Limits,
    Provisional,
    Refused,
    admit,
)

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
LIMITS = Limits(max_seconds=600, max_iota=1000, confirm_s=900)
ORDERS = {  # order -> (buyer, unpaid iota, price per hour)
    "o1": ("ann", 500, 3600),
    "o2": ("ann", 2000, 7200),
    "o3": ("bob", 800, 3600),
    "o4": ("cat", 300, 360),
}


def candidate(
    bundle: str,
    order: str,
    value: int,
    inputs: set[str],
    ago_s: float = 1.0,
    ready: bool = True,
    covered: bool = True,
) -> Candidate:
    buyer, unpaid, price = ORDERS[order]
    seen = NOW - dt.timedelta(seconds=ago_s)
    return Candidate(
        bundle, order, buyer, value, unpaid, price, frozenset(inputs), seen, ready, covered
    )


candidates = st.lists(
    st.builds(
        candidate,
        bundle=st.text("ABCDEFGH9", min_size=3, max_size=3),
        order=st.sampled_from(sorted(ORDERS)),
        value=st.integers(1, 1500),
        inputs=st.sets(st.sampled_from(["I1", "I2", "I3", "I4", "I5", "I6", "I7"]), max_size=2),
        ago_s=st.floats(0, 1200),
        ready=st.booleans(),
        covered=st.booleans(),
    ),
    max_size=25,
    unique_by=lambda c: c.bundle_hash,
)


def running_of(
    decisions: list[Admitted | Refused], by_hash: dict[str, Candidate]
) -> list[Provisional]:
    return [
        Provisional(d.bundle_hash, d.order_id, d.buyer, d.value, by_hash[d.bundle_hash].inputs)
        for d in decisions
        if isinstance(d, Admitted)
    ]


@settings(max_examples=400)
@given(first=candidates, later=candidates)
def test_caps_hold_over_two_passes(first: list[Candidate], later: list[Candidate]) -> None:
    later = [c for c in later if c.bundle_hash not in {f.bundle_hash for f in first}]
    by_hash = {c.bundle_hash: c for c in first + later}
    running = running_of(admit(first, [], LIMITS, NOW), by_hash)
    decisions = admit(first + later, running, LIMITS, NOW)
    admitted = [d for d in decisions if isinstance(d, Admitted)]
    everything = running + running_of(decisions, by_hash)
    assert not {d.bundle_hash for d in admitted} & {p.bundle_hash for p in running}
    per_buyer: dict[str, int] = defaultdict(int)
    per_order: dict[str, int] = defaultdict(int)
    owner: dict[str, str] = {}
    for p in everything:
        per_buyer[p.buyer] += p.value
        per_order[p.order_id] += p.value
        for address in p.inputs:
            assert owner.setdefault(address, p.bundle_hash) == p.bundle_hash, (
                "an input bought twice"
            )
    assert all(v <= LIMITS.max_iota for v in per_buyer.values())
    assert all(per_order[o] <= ORDERS[o][1] for o in per_order)
    spent_by: dict[str, set[str]] = defaultdict(set)
    for c in first + later:
        for address in c.inputs:
            spent_by[address].add(c.bundle_hash)
    for d in admitted:
        c = by_hash[d.bundle_hash]
        assert c.ready and c.covered and c.inputs
        assert all(spent_by[a] == {c.bundle_hash} for a in c.inputs), "a double spend admitted"
        assert 0 < d.value <= c.value
        assert NOW < d.until <= NOW + dt.timedelta(seconds=LIMITS.max_seconds)
        assert d.until <= c.first_seen + dt.timedelta(seconds=LIMITS.confirm_s)
        assert abs(d.seconds - (d.until - NOW).total_seconds()) < 1e-6
    # Every candidate not running gets exactly one answer.
    assert sorted(d.bundle_hash for d in decisions) == sorted(
        c.bundle_hash
        for c in first + later
        if c.bundle_hash not in {p.bundle_hash for p in running}
    )


@given(candidates)
def test_off_means_nothing_is_admitted(found: list[Candidate]) -> None:
    for limits in (Limits(0, 1000, 900), Limits(600, 0, 900)):
        assert not [d for d in admit(found, [], limits, NOW) if isinstance(d, Admitted)]


def test_a_double_spend_opens_nothing() -> None:
    one = candidate("AAA", "o1", 100, {"I1"})
    two = candidate("BBB", "o3", 100, {"I1", "I2"})  # another buyer, the same input
    decisions = admit([one, two], [], LIMITS, NOW)
    assert all(isinstance(d, Refused) for d in decisions)
    assert {d.why for d in decisions if isinstance(d, Refused)} == {
        "another bundle spends the same inputs"
    }


def test_twenty_small_bundles_stop_at_the_cap() -> None:
    small = [candidate(f"B{i:02}", "o2", 90, {f"S{i}"}, ago_s=30 - i) for i in range(20)]
    decisions = admit(small, [], LIMITS, NOW)
    admitted = [d for d in decisions if isinstance(d, Admitted)]
    assert sum(d.value for d in admitted) == LIMITS.max_iota  # 11 x 90 + the 10 left of one
    assert [d.value for d in admitted][-1] == 10
    assert sum(isinstance(d, Refused) for d in decisions) == 20 - len(admitted)


def test_inputs_already_provisional_buy_nothing_more() -> None:
    running = [Provisional("AAA", "o1", "ann", 100, frozenset({"I1"}))]
    again = candidate("BBB", "o3", 100, {"I1"})  # another account, inputs already at risk
    (decision,) = admit([again], running, LIMITS, NOW)
    assert isinstance(decision, Refused)
    assert decision.why == "its inputs already pay for provisional access"


def test_time_is_the_order_price_capped_and_ends_at_the_confirmation_deadline() -> None:
    fresh = candidate("AAA", "o1", 300, {"I1"})  # 300 iota at 3600/h: 300 s
    big = candidate("BBB", "o3", 800, {"I2"})  # 800 s, capped at 600 s
    late = candidate("CCC", "o4", 300, {"I3"}, ago_s=800)  # 3000 s bought, 100 s to deadline
    by = {d.bundle_hash: d for d in admit([fresh, big, late], [], LIMITS, NOW)}
    assert isinstance(by["AAA"], Admitted) and by["AAA"].seconds == 300
    assert isinstance(by["BBB"], Admitted) and by["BBB"].seconds == 600
    assert isinstance(by["CCC"], Admitted) and abs(by["CCC"].seconds - 100) < 1e-6
    gone = candidate("DDD", "o1", 10, {"I4"}, ago_s=901)
    assert admit([gone], [], LIMITS, NOW) == [Refused("DDD", "not confirmed in time")]


def test_unready_or_uncovered_bundles_wait() -> None:
    chained = candidate("AAA", "o1", 100, {"R1"}, covered=False)  # spends a pending remainder
    unsolid = candidate("BBB", "o3", 100, {"I2"}, ready=False)
    assert all(isinstance(d, Refused) for d in admit([chained, unsolid], [], LIMITS, NOW))
