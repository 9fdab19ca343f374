"""Parsing of topics and payloads into readings or rejections (pure, no processes)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import parsing
from ingest.parsing import Parser, Reading, Rejection

NOW = 1_750_000_000.0
P = Parser(max_payload_bytes=512, value_min=-1e6, value_max=1e6, max_future_s=300)


def parse(payload: bytes | str, topic: str = "live/plug-1/power") -> Reading | Rejection:
    data = payload.encode() if isinstance(payload, str) else payload
    return P.parse(topic, data, NOW)


def reason(payload: bytes | str, topic: str = "live/plug-1/power") -> str:
    result = parse(payload, topic)
    assert isinstance(result, Rejection), result
    return result.reason


@pytest.mark.parametrize(
    ("payload", "value"),
    [("1234.5", 1234.5), (" 42 \n", 42.0), ("-3", -3.0), ("1e3", 1000.0), (".5", 0.5)],
)
def test_bare_number_takes_arrival_time(payload: str, value: float) -> None:
    assert parse(payload) == Reading("plug-1", "power", value, NOW)


def test_json_without_ts_takes_arrival_time_and_ignores_unit() -> None:
    assert parse('{"value": 1234.5, "unit": "mW"}') == Reading("plug-1", "power", 1234.5, NOW)
    assert parse('{"value": 7, "ts": null}') == Reading("plug-1", "power", 7.0, NOW)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (NOW - 10.25, NOW - 10.25),  # epoch seconds, float
        (int(NOW) - 60, int(NOW) - 60.0),  # epoch seconds, int
        (int(NOW * 1000) - 1500, NOW - 1.5),  # epoch milliseconds, int
        (1e11, 1e8),  # the threshold itself is milliseconds (1973-03-03)
        (99_999_999_999, 99_999_999_999.0),  # just below: seconds, so far in the future
        ("2025-06-15T14:13:20Z", 1_749_996_800.0),
        ("2025-06-15T16:13:20.250+02:00", 1_749_996_800.25),
        ("2025-06-15t14:13:20.5z", 1_749_996_800.5),
        ("2025-06-15 14:13:20.123456789Z", 1_749_996_800.123456),
    ],
)
def test_ts_forms(ts: object, expected: float) -> None:
    result = parse(json.dumps({"value": 1, "ts": ts}))
    if expected > NOW + 300:
        assert isinstance(result, Rejection) and result.reason == parsing.FUTURE_TS
        return
    assert isinstance(result, Reading), result
    assert result.ts == pytest.approx(expected, abs=1e-6)


def test_late_readings_are_kept() -> None:
    result = parse('{"value": 1, "ts": "2001-09-09T01:46:40Z"}')
    assert isinstance(result, Reading) and result.ts == 1_000_000_000.0


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ("", parsing.NOT_A_NUMBER),
        ("hello", parsing.NOT_A_NUMBER),
        ("1_000", parsing.NOT_A_NUMBER),
        ("0x10", parsing.NOT_A_NUMBER),
        ('"12"', parsing.NOT_A_NUMBER),
        ("[1]", parsing.NOT_A_NUMBER),
        ('{"value": "12"}', parsing.NOT_A_NUMBER),
        ('{"value": true}', parsing.NOT_A_NUMBER),
        ('{"value": null}', parsing.NOT_A_NUMBER),
        ('{"ts": 1}', parsing.NOT_A_NUMBER),
        ("NaN", parsing.NOT_FINITE),
        ("-inf", parsing.NOT_FINITE),
        ("Infinity", parsing.NOT_FINITE),
        ("1e999", parsing.NOT_FINITE),
        ('{"value": NaN}', parsing.NOT_FINITE),
        ('{"value": -Infinity}', parsing.NOT_FINITE),
        ('{"value": 1e999}', parsing.NOT_FINITE),
        ("1e7", parsing.OUT_OF_RANGE),
        ('{"value": -1000001}', parsing.OUT_OF_RANGE),
        ('{"value": ' + "9" * 400 + "}", parsing.OUT_OF_RANGE),
        ('{"value": 1,', parsing.INVALID_JSON),
        ('{"value": 1} x', parsing.INVALID_JSON),
        ("{value: 1}", parsing.INVALID_JSON),
        (b"\xff\xfe1", parsing.INVALID_UTF8),
        (b'{"value": 1, "unit": "\xe9"}', parsing.INVALID_UTF8),
        ("1" * 513, parsing.OVERSIZED),
        ('{"value": 1, "ts": "yesterday"}', parsing.BAD_TS),
        ('{"value": 1, "ts": "2025-06-15T14:13:20"}', parsing.BAD_TS),  # no time zone
        ('{"value": 1, "ts": "2025-13-15T14:13:20Z"}', parsing.BAD_TS),
        ('{"value": 1, "ts": true}', parsing.BAD_TS),
        ('{"value": 1, "ts": [1]}', parsing.BAD_TS),
        ('{"value": 1, "ts": -5}', parsing.BAD_TS),
        ('{"value": 1, "ts": 0}', parsing.BAD_TS),
        ('{"value": 1, "ts": 1e999}', parsing.BAD_TS),
        ('{"value": 1, "ts": NaN}', parsing.NOT_FINITE),
        (f'{{"value": 1, "ts": {NOW + 301}}}', parsing.FUTURE_TS),
        (f'{{"value": 1, "ts": {int((NOW + 3600) * 1000)}}}', parsing.FUTURE_TS),
        ('{"value": 1, "ts": "2999-01-01T00:00:00Z"}', parsing.FUTURE_TS),
    ],
)
def test_bad_payloads(payload: str | bytes, why: str) -> None:
    assert reason(payload) == why


def test_slightly_future_ts_is_accepted() -> None:
    result = parse(json.dumps({"value": 1, "ts": NOW + 299}))
    assert isinstance(result, Reading) and result.ts == NOW + 299


@pytest.mark.parametrize(
    "topic",
    [
        "live/plug-1",
        "live/plug-1/power/extra",
        "live//power",
        "live/plug-1/",
        "other/plug-1/power",
        "live/plug 1/power",
        "live/plug-1/pow$er",
        "live/-x/power",
        "live/" + "d" * 65 + "/power",
        "live/plug-1/" + "s" * 65,
        "live/plüg/power",
    ],
)
def test_malformed_topics(topic: str) -> None:
    assert reason("1", topic) == parsing.MALFORMED_TOPIC


@pytest.mark.parametrize("topic", ["live/plug-1/power", "live/A.b_c-9/t_1.x", "live/d/s"])
def test_sane_topics(topic: str) -> None:
    assert isinstance(parse("1", topic), Reading)


def test_configured_prefix() -> None:
    parser = Parser(live_prefix="raw")
    assert isinstance(parser.parse("raw/a/b", b"1", NOW), Reading)
    assert parser.parse("live/a/b", b"1", NOW) == Rejection(
        parsing.MALFORMED_TOPIC, "topic 'live/a/b'"
    )


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_any_float_in_range_round_trips(value: float) -> None:
    assert parse(json.dumps({"value": value})) == Reading("plug-1", "power", value, NOW)
    assert parse(repr(value)) == Reading("plug-1", "power", value, NOW)


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    result = parse(payload)
    if isinstance(result, Reading):
        assert math.isfinite(result.value)
    else:
        assert result.reason in parsing.REASONS


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2025, 1, 1)))
def test_rfc3339_matches_datetime(dt: datetime) -> None:
    aware = dt.replace(tzinfo=UTC)
    result = parse(json.dumps({"value": 1, "ts": aware.isoformat()}))
    assert isinstance(result, Reading)
    assert result.ts == pytest.approx(aware.timestamp(), abs=1e-6)


def test_deeply_nested_json_is_invalid_not_a_crash() -> None:
    payload = '{"x": ' + "[" * 1500 + "]" * 1500 + ', "value": 1}'
    result = Parser().parse("live/plug-1/power", payload.encode(), NOW)
    assert result == Rejection(parsing.INVALID_JSON, "JSON nested too deeply")
