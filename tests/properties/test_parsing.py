"""Properties of the ingest payload parser (pure, no processes).

Whatever a device sends, `Parser.parse` answers with a Reading or a Rejection and never
raises; numbers survive the trip through the parser unchanged; the three timestamp forms
(epoch seconds, epoch milliseconds, RFC 3339 with any offset) name the same instant; and
readings stamped beyond the future bound are refused in every form.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingest.parsing import (
    MALFORMED_TOPIC,
    NOT_A_NUMBER,
    NOT_FINITE,
    OUT_OF_RANGE,
    OVERSIZED,
    REASONS,
    Parser,
    Reading,
    Rejection,
)

# No deadline: the suite shares two cores with real processes, timing says nothing here.
PROPS = settings(deadline=None, max_examples=300)

MAX_PAYLOAD = 4096
MAX_FUTURE_S = 300.0
VALUE_MIN, VALUE_MAX = -1e9, 1e9
PARSER = Parser("live", MAX_PAYLOAD, VALUE_MIN, VALUE_MAX, MAX_FUTURE_S)
TOPIC = "live/plug-1/power"

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
arrivals = st.floats(min_value=1.5e9, max_value=2.5e9, allow_nan=False, allow_infinity=False)
in_range = st.floats(min_value=VALUE_MIN, max_value=VALUE_MAX, allow_nan=False)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
ts_values = (
    json_values
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()
    | st.from_regex(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?")
)


def json_payload(doc: dict[str, Any]) -> bytes:
    # allow_nan: NaN/Infinity literals are exactly what a sloppy device sends.
    return json.dumps(doc, allow_nan=True).encode()


payloads = st.one_of(
    st.binary(max_size=MAX_PAYLOAD + 64),
    st.text(max_size=200).map(str.encode),
    st.builds(
        lambda v, ts, unit: json_payload({"value": v, "ts": ts, "unit": unit}),
        json_values,
        ts_values,
        json_values,
    ),
    st.dictionaries(st.sampled_from(["value", "ts", "unit", "x"]), json_values).map(json_payload),
    st.sampled_from(["nan", "-inf", "Infinity", "1_000", "0x10", "1e999", " 12 ", "", "{"]).map(
        str.encode
    ),
)


def check_reading(result: Reading, arrival: float) -> None:
    assert math.isfinite(result.value)
    assert VALUE_MIN <= result.value <= VALUE_MAX
    assert 0 < result.ts <= arrival + MAX_FUTURE_S


@PROPS
@given(payload=payloads, arrival=arrivals)
@example(payload=b'{"value":' + b"[" * 1500 + b"]" * 1500 + b"}", arrival=1.7e9)
@example(payload=b'{"value": 1, "ts": ' + b'{"a":' * 900 + b"1" + b"}" * 901, arrival=1.7e9)
@example(payload=b"\xff\xfe1", arrival=1.7e9)
@example(payload=b'{"value": 1e400}', arrival=1.7e9)
@example(payload=b'{"value": ' + b"9" * 400 + b"}", arrival=1.7e9)
def test_any_payload_gives_a_reading_or_a_rejection(payload: bytes, arrival: float) -> None:
    result = PARSER.parse(TOPIC, payload, arrival)
    assert type(result) in (Reading, Rejection)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert len(result.detail) < 300  # details are logged: bounded whatever came in
        if len(payload) > MAX_PAYLOAD:
            assert result.reason == OVERSIZED
    else:
        assert len(payload) <= MAX_PAYLOAD
        assert (result.device, result.sensor) == ("plug-1", "power")
        check_reading(result, arrival)


@PROPS
@given(topic=st.text(max_size=300), payload=st.binary(max_size=64))
@example(topic="live/" + "a" * 65 + "/x", payload=b"1")
@example(topic="live/a/b/c", payload=b"1")
@example(topic="live/+/#", payload=b"1")
@example(topic="live//x", payload=b"1")
def test_any_topic_gives_a_reading_or_a_rejection(topic: str, payload: bytes) -> None:
    result = PARSER.parse(topic, payload, 1.7e9)
    assert type(result) in (Reading, Rejection)
    if isinstance(PARSER.parse_topic(topic), Rejection):
        assert isinstance(result, Rejection) and result.reason == MALFORMED_TOPIC
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert len(result.detail) < 300
    else:
        assert topic == f"live/{result.device}/{result.sensor}"


@PROPS
@given(device=names, sensor=names)
def test_well_formed_topics_pass_the_topic_check(device: str, sensor: str) -> None:
    assert PARSER.parse_topic(f"live/{device}/{sensor}") == (device, sensor)
    assert isinstance(PARSER.parse_topic(f"avg/{device}/{sensor}"), Rejection)
    assert isinstance(PARSER.parse_topic(f"live/{device}/{sensor}/extra"), Rejection)


@PROPS
@given(value=in_range, arrival=arrivals, pad=st.sampled_from(["", " ", "\n", "\t "]))
def test_numbers_round_trip(value: float, arrival: float, pad: str) -> None:
    for text in (repr(value), json.dumps(value), f"{value:.17g}"):
        result = PARSER.parse(TOPIC, f"{pad}{text}{pad}".encode(), arrival)
        assert isinstance(result, Reading), (text, result)
        assert result.value == value and result.ts == arrival
    result = PARSER.parse(TOPIC, json_payload({"value": value, "unit": "mW"}), arrival)
    assert isinstance(result, Reading) and result.value == value and result.ts == arrival


@PROPS
@given(value=st.integers(min_value=int(VALUE_MIN), max_value=int(VALUE_MAX)))
def test_integers_round_trip(value: int) -> None:
    for payload in (str(value).encode(), json_payload({"value": value})):
        result = PARSER.parse(TOPIC, payload, 1.7e9)
        assert isinstance(result, Reading) and result.value == value


@PROPS
@given(
    value=st.floats(allow_nan=False).filter(lambda v: not VALUE_MIN <= v <= VALUE_MAX)
    | st.integers().filter(lambda v: not VALUE_MIN <= v <= VALUE_MAX)
)
def test_out_of_range_numbers_are_refused(value: float) -> None:
    for payload in (json_payload({"value": value}), repr(value).encode()):
        result = PARSER.parse(TOPIC, payload, 1.7e9)
        assert isinstance(result, Rejection)
        assert result.reason in (OUT_OF_RANGE, NOT_FINITE, NOT_A_NUMBER)


@PROPS
@given(word=st.sampled_from(["nan", "NaN", "-nan", "inf", "-Infinity", "+inf", "infinity"]))
def test_non_finite_words_are_refused(word: str) -> None:
    result = PARSER.parse(TOPIC, word.encode(), 1.7e9)
    assert isinstance(result, Rejection) and result.reason == NOT_FINITE


@PROPS
@given(value=st.booleans() | st.text(max_size=10) | st.lists(st.integers(), max_size=3))
def test_non_numeric_json_values_are_refused(value: object) -> None:
    result = PARSER.parse(TOPIC, json_payload({"value": value}), 1.7e9)
    assert isinstance(result, Rejection) and result.reason == NOT_A_NUMBER
