"""Properties of timestamp handling in the ingest parser (pure).

One instant, written as epoch seconds (float or int), epoch milliseconds (int or float) or
RFC 3339 with any offset and either case of `T`/`Z`, parses to the same epoch seconds; the
future bound holds in every form; anything else in `ts` is a BAD_TS rejection, never an error.
"""

from __future__ import annotations

import datetime as dt
import json
import math

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from ingest.parsing import BAD_TS, FUTURE_TS, MS_THRESHOLD, Parser, Reading, Rejection

PROPS = settings(deadline=None, max_examples=300)
MAX_FUTURE_S = 300.0
PARSER = Parser(max_future_s=MAX_FUTURE_S)
TOPIC = "live/plug-1/power"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

arrivals = st.floats(min_value=1.5e9, max_value=2.5e9, allow_nan=False, allow_infinity=False)
# Offsets real time zones use, from -12:00 to +14:00 in quarter hours.
offsets = st.integers(min_value=-48, max_value=56).map(lambda q: dt.timedelta(minutes=15 * q))


def rfc3339(ms: int, offset: dt.timedelta, lower: bool = False) -> str:
    moment = (EPOCH + dt.timedelta(milliseconds=ms)).astimezone(dt.timezone(offset))
    text = moment.isoformat(timespec="milliseconds")
    if text.endswith("+00:00") and not offset:
        text = text[:-6] + "Z"
    return text.lower() if lower else text


def forms(ms: int, offset: dt.timedelta, lower: bool) -> list[object]:
    """The same instant in every accepted `ts` form."""
    out: list[object] = [
        ms / 1000,
        ms,
        float(ms),
        rfc3339(ms, offset, lower),
        rfc3339(ms, dt.timedelta(0)),
    ]
    if ms % 1000 == 0:
        out.append(ms // 1000)
    return out


def parse_ts_via_json(ts: object, arrival: float) -> Reading | Rejection:
    return PARSER.parse(TOPIC, json.dumps({"value": 1.5, "ts": ts}).encode(), arrival)


@st.composite
def instants(draw: st.DrawFn) -> tuple[float, int]:
    """(arrival, instant in ms): any time from 1973-03-03 (the ms/s threshold) to the bound."""
    arrival = draw(arrivals)
    latest = math.floor((arrival + MAX_FUTURE_S) * 1000) - 1
    return arrival, draw(st.integers(min_value=int(MS_THRESHOLD), max_value=latest))


@PROPS
@given(instant=instants(), offset=offsets, lower=st.booleans())
@example(instant=(1.7e9, int(MS_THRESHOLD)), offset=dt.timedelta(0), lower=False)
def test_every_form_names_the_same_instant(
    instant: tuple[float, int], offset: dt.timedelta, lower: bool
) -> None:
    arrival, ms = instant
    expected = ms / 1000
    for ts in forms(ms, offset, lower):
        result = parse_ts_via_json(ts, arrival)
        assert isinstance(result, Reading), (ts, result)
        assert math.isclose(result.ts, expected, rel_tol=0, abs_tol=1e-6), (ts, result.ts)


@PROPS
@given(instant=instants(), micros=st.integers(0, 999_999), offset=offsets)
def test_rfc3339_keeps_sub_millisecond_precision(
    instant: tuple[float, int], micros: int, offset: dt.timedelta
) -> None:
    arrival, ms = instant
    seconds = ms // 1000
    assume(seconds + 1 < arrival + MAX_FUTURE_S)
    moment = (EPOCH + dt.timedelta(seconds=seconds, microseconds=micros)).astimezone(
        dt.timezone(offset)
    )
    result = PARSER.parse_ts(moment.isoformat(timespec="microseconds"), arrival)
    assert isinstance(result, float)
    assert math.isclose(result, seconds + micros / 1e6, rel_tol=0, abs_tol=1e-6)


@PROPS
@given(arrival=arrivals, delta=st.floats(min_value=-1e8, max_value=1e8, allow_nan=False))
@example(arrival=1.7e9, delta=MAX_FUTURE_S)
@example(arrival=1.7e9, delta=MAX_FUTURE_S + 1e-3)
def test_future_bound_in_epoch_seconds(arrival: float, delta: float) -> None:
    ts = arrival + delta
    result = PARSER.parse_ts(ts, arrival)
    if ts > arrival + MAX_FUTURE_S:
        assert isinstance(result, Rejection) and result.reason == FUTURE_TS
    else:
        assert result == ts


@PROPS
@given(
    arrival=arrivals,
    ahead_ms=st.integers(min_value=1, max_value=10**12),
    offset=offsets,
    lower=st.booleans(),
)
def test_future_bound_holds_in_every_form(
    arrival: float, ahead_ms: int, offset: dt.timedelta, lower: bool
) -> None:
    ms = math.ceil((arrival + MAX_FUTURE_S) * 1000) + ahead_ms
    assume(ms < 253_402_300_799_000)  # RFC 3339 ends with year 9999
    for ts in forms(ms, offset, lower):
        result = parse_ts_via_json(ts, arrival)
        assert isinstance(result, Rejection) and result.reason == FUTURE_TS, (ts, result)


@PROPS
@given(arrival=arrivals)
def test_missing_or_null_ts_means_arrival(arrival: float) -> None:
    for payload in (b'{"value": 2}', b'{"value": 2, "ts": null}', b"2"):
        result = PARSER.parse(TOPIC, payload, arrival)
        assert isinstance(result, Reading) and result.ts == arrival


@PROPS
@given(
    ts=st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    | st.integers(max_value=0)
    | st.floats(max_value=0.0)
    | st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400)])
    | st.text(max_size=40)
)
@example(ts="2024-05-01T12:00:00")  # no time zone
@example(ts="2024-13-01T12:00:00Z")  # month 13
@example(ts="2016-12-31T23:59:60Z")  # a leap second
@example(ts="1e9")
def test_anything_else_is_bad_ts_never_an_error(ts: object) -> None:
    result = PARSER.parse_ts(ts, 1.7e9)
    if isinstance(result, float):
        # Only a valid RFC 3339 string with a zone can get here (st.text may write one).
        assert isinstance(ts, str) and 0 < result <= 1.7e9 + MAX_FUTURE_S
    else:
        assert isinstance(result, Rejection) and result.reason in (BAD_TS, FUTURE_TS)


@PROPS
@given(ms=st.integers(min_value=int(MS_THRESHOLD), max_value=2 * 10**12))
def test_seconds_and_milliseconds_are_told_apart_by_magnitude(ms: int) -> None:
    arrival = 2.1e9
    by_ms = PARSER.parse_ts(ms, arrival)
    by_seconds = PARSER.parse_ts(ms / 1000, arrival)
    assert by_ms == by_seconds == ms / 1000
