"""Instant access: which unconfirmed payments may open provisional access now, and for how long.

The risk rules of DESIGN.md's "Instant access", as one pure function of what the watcher saw
(pending bundles paying watched orders) and what is provisional already. A bundle is admitted
only if all hold:
- the node holds it valid, signed, solid and not conflicting (`ready`, from `getTipInfo`);
- its inputs' confirmed balances cover it (`covered`); a bundle spending the unconfirmed
  remainder of another cannot be covered, so one seed cannot chain payments past this rule;
- no other bundle seen spends from one of its inputs (a double spend in the making), and no
  bundle already provisional does either (the same inputs cannot buy twice, whatever the
  account or order they pay);
- it pays a part of its order's quote: only value up to what of the order's `amount_iota` is
  neither confirmed nor provisional, at the order's price, counts (the rest waits for
  confirmation, where pricing.py prices it);
- the buyer's provisional value, this one included, stays within `max_iota`: a bundle that
  would pass it is admitted for the remainder only (its time shrinks with it), or not at all.
Time is capped at `max_seconds` and ends at the latest `confirm_s` after the bundle was first
seen: a payment that does not confirm by then stops giving access. Confirmation converts the
time into regular time from the moment it began (access/crediting.py), so it is counted once.

The seller's worst case is therefore: per buyer at most `max_iota` of value at risk, for at most
`min(max_seconds, confirm_s)` seconds of access; nothing at risk is ever credited as revenue.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class Limits:
    max_seconds: float  # INSTANT_ACCESS_MAX_S; 0 turns instant access off
    max_iota: int  # INSTANT_ACCESS_MAX_IOTA, per buyer, at a time
    confirm_s: float  # INSTANT_ACCESS_CONFIRM_S


@dataclass(frozen=True)
class Candidate:
    """A pending bundle paying a watched order's address, as the watcher saw it."""

    bundle_hash: str
    order_id: str
    buyer: str
    value: int  # iota the bundle pays the order's address
    order_unpaid_iota: int  # what of the order's quote is not confirmed yet
    price_iota_per_hour: int  # the order's price
    inputs: frozenset[str]  # addresses the bundle spends
    first_seen: dt.datetime
    ready: bool  # valid, signed, solid, not conflicting
    covered: bool  # the inputs' confirmed balances cover what it spends


@dataclass(frozen=True)
class Provisional:
    """Provisional access running now (admitted before, not confirmed, not ended)."""

    bundle_hash: str
    order_id: str
    buyer: str
    value: int
    inputs: frozenset[str]


@dataclass(frozen=True)
class Admitted:
    bundle_hash: str
    order_id: str
    buyer: str
    value: int  # iota at risk (capped)
    seconds: float
    until: dt.datetime


@dataclass(frozen=True)
class Refused:
    bundle_hash: str
    why: str


Decision = Admitted | Refused


def admit(
    candidates: Iterable[Candidate],
    running: Iterable[Provisional],
    limits: Limits,
    now: dt.datetime,
) -> list[Decision]:
    """Decide for each candidate not already running, oldest first (ties by bundle hash)."""
    running = list(running)
    candidates = list(candidates)
    already = {p.bundle_hash for p in running}
    exposure: dict[str, int] = defaultdict(int)  # buyer -> provisional value
    on_order: dict[str, int] = defaultdict(int)  # order -> provisional value
    held_inputs: dict[str, str] = {}  # input address -> the bundle it is provisional for
    for p in running:
        exposure[p.buyer] += p.value
        on_order[p.order_id] += p.value
        for address in p.inputs:
            held_inputs[address] = p.bundle_hash
    spenders: dict[str, set[str]] = defaultdict(set)  # input -> every bundle seen spending it
    for c in candidates:
        for address in c.inputs:
            spenders[address].add(c.bundle_hash)
    decisions: list[Decision] = []
    for c in sorted(candidates, key=lambda c: (c.first_seen, c.bundle_hash)):
        if c.bundle_hash in already:
            continue
        why = _refusal(c, limits, now, held_inputs, spenders)
        if why is None:
            quote_left = c.order_unpaid_iota - on_order[c.order_id]
            value = min(c.value, quote_left, limits.max_iota - exposure[c.buyer])
            if quote_left <= 0:
                why = "the order's quote is covered already"
            elif value <= 0:
                why = "the buyer's provisional value is at its cap"
        if why is not None:
            decisions.append(Refused(c.bundle_hash, why))
            continue
        bought = min(value * SECONDS_PER_HOUR / c.price_iota_per_hour, limits.max_seconds)
        deadline = c.first_seen + dt.timedelta(seconds=limits.confirm_s)
        until = min(now + dt.timedelta(seconds=bought), deadline)
        seconds = (until - now).total_seconds()
        decisions.append(Admitted(c.bundle_hash, c.order_id, c.buyer, value, seconds, until))
        exposure[c.buyer] += value
        on_order[c.order_id] += value
        for address in c.inputs:
            held_inputs[address] = c.bundle_hash
    return decisions


def _refusal(
    c: Candidate,
    limits: Limits,
    now: dt.datetime,
    held_inputs: dict[str, str],
    spenders: dict[str, set[str]],
) -> str | None:
    if limits.max_seconds <= 0 or limits.max_iota <= 0:
        return "instant access is off"
    if not c.ready:
        return "not valid, solid and consistent on the node"
    if not c.covered:
        return "its inputs' confirmed balances do not cover it"
    if not c.inputs:
        return "it spends nothing"
    if c.price_iota_per_hour <= 0:
        return "no price"
    if now >= c.first_seen + dt.timedelta(seconds=limits.confirm_s):
        return "not confirmed in time"
    for address in c.inputs:
        if spenders[address] - {c.bundle_hash}:
            return "another bundle spends the same inputs"
        if held_inputs.get(address, c.bundle_hash) != c.bundle_hash:
            return "its inputs already pay for provisional access"
    return None
