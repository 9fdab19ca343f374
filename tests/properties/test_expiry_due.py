"""The expiry pass on one read of the active grants (access/grants.py), without MongoDB: which
grants get their `grant_ending` notice, and when the loop must look again."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from broker_auth.access.grants import ending_within, next_end_or_notice
from broker_auth.infra.db import Doc

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)

grant = st.builds(
    # told: never (None), of this end (0), or of an earlier end (extended since: > 0 s before)
    lambda end_s, told: {
        "expires_at": NOW + dt.timedelta(seconds=end_s),
        **(
            {"ending_notice_for": NOW + dt.timedelta(seconds=end_s - told)}
            if told is not None
            else {}
        ),
    },
    st.integers(min_value=-600, max_value=3600),
    st.one_of(st.none(), st.just(0), st.integers(min_value=1, max_value=600)),
)
notice = st.integers(min_value=0, max_value=900).map(float)


@given(st.lists(grant, max_size=20), notice)
def test_the_loop_wakes_at_the_first_end_or_notice_ahead_and_not_before(
    active: list[Doc], notice_s: float
) -> None:
    due = next_end_or_notice(active, NOW, notice_s)
    ends = [g["expires_at"] for g in active]
    notices = [e - dt.timedelta(seconds=notice_s) for e in ends]
    notices_ahead = [n for n in notices if n > NOW]
    if not active:
        assert due is None
        return
    assert due is not None
    assert all(due <= e for e in ends), "never sleeps past an end"
    assert all(due <= n for n in notices_ahead), "never sleeps past a notice"
    assert due in ends + notices_ahead, "wakes for something due, not at random"


@given(st.lists(grant, max_size=20), notice)
def test_notices_go_to_grants_ending_within_the_notice_not_told_of_this_end(
    active: list[Doc], notice_s: float
) -> None:
    chosen = ending_within(active, NOW, notice_s)
    for g in active:
        end = g["expires_at"]
        due = NOW < end <= NOW + dt.timedelta(seconds=notice_s)
        told = g.get("ending_notice_for") == end
        assert (g in chosen) == (due and not told)


def test_without_notices_only_ends_count() -> None:
    ends = [NOW + dt.timedelta(seconds=s) for s in (100, 50, 900)]
    active: list[Doc] = [{"expires_at": e} for e in ends]
    assert next_end_or_notice(active, NOW, None) == ends[1]
    assert next_end_or_notice(active, NOW, 30) == ends[1] - dt.timedelta(seconds=30)
