"""Turn one MQTT message (topic + payload bytes) into a Reading or a Rejection. Pure, no I/O.

Payload forms:
- a bare number: `1234.5` (time = arrival time);
- JSON: `{"value": 1234.5, "ts": ..., "unit": "W"}`; `unit` is accepted and ignored.

`ts` may be:
- epoch seconds (int or float), or epoch milliseconds (int or float), told apart by magnitude:
  |ts| >= 1e11 is milliseconds. 1e11 s would be the year 5138 and 1e11 ms is 1973-03-03, so every
  plausible time after early 1973 is read right in either unit;
- an RFC 3339 string with a time zone (`2024-05-01T12:00:00.250Z`, `...+02:00`);
- absent or null: arrival time (the worker then gives each reading of a series its own
  millisecond, so a burst within one millisecond is not collapsed into one point by the store).
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

# Rejection reasons: the `reason` label values of ingest_readings_rejected_total.
OVERSIZED: Final = "oversized"
MALFORMED_TOPIC: Final = "malformed_topic"
INVALID_UTF8: Final = "invalid_utf8"
INVALID_JSON: Final = "invalid_json"
NOT_A_NUMBER: Final = "not_a_number"
NOT_FINITE: Final = "not_finite"
OUT_OF_RANGE: Final = "out_of_range"
BAD_TS: Final = "bad_ts"
FUTURE_TS: Final = "future_ts"
REASONS: Final = (
    OVERSIZED,
    MALFORMED_TOPIC,
    INVALID_UTF8,
    INVALID_JSON,
    NOT_A_NUMBER,
    NOT_FINITE,
    OUT_OF_RANGE,
    BAD_TS,
    FUTURE_TS,
)

MS_THRESHOLD: Final = 1e11
# Device ids and sensor names end up as tag values and topic levels: keep them plain.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A bare number as JSON writes it (float() alone would also take "1_000", " nan", "infinity").
_NUMBER_RE = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NON_FINITE_WORDS = frozenset(
    {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)
_RFC3339_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})"
)


class Reading(NamedTuple):
    device: str
    sensor: str
    value: float
    ts: float  # epoch seconds


def ts_ms(ts: float) -> int:
    """A reading time as the store keeps it: whole milliseconds."""
    return round(ts * 1000)


class Rejection(NamedTuple):
    reason: str
    detail: str


class _NonFiniteError(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NonFiniteError(name)


class Parser:
    """Validation limits bundled with the parse functions (one instance per worker)."""

    def __init__(
        self,
        live_prefix: str = "live",
        max_payload_bytes: int = 4096,
        value_min: float = -1e9,
        value_max: float = 1e9,
        max_future_s: float = 300.0,
    ) -> None:
        self.live_prefix = live_prefix
        self.max_payload_bytes = max_payload_bytes
        self.value_min = value_min
        self.value_max = value_max
        self.max_future_s = max_future_s

    def parse(self, topic: str, payload: bytes | bytearray, arrival: float) -> Reading | Rejection:
        names = self.parse_topic(topic)
        if isinstance(names, Rejection):
            return names
        return self.reading(names, payload, arrival)

    def reading(
        self, names: tuple[str, str], payload: bytes | bytearray, arrival: float
    ) -> Reading | Rejection:
        """The reading of a series whose topic was parsed already (the worker caches topics)."""
        if len(payload) > self.max_payload_bytes:
            return Rejection(OVERSIZED, f"{len(payload)} bytes > {self.max_payload_bytes}")
        parsed = self.parse_payload(payload, arrival)
        if isinstance(parsed, Rejection):
            return parsed
        return Reading(names[0], names[1], parsed[0], parsed[1])

    def parse_topic(self, topic: str) -> tuple[str, str] | Rejection:
        parts = topic.split("/")
        if (
            len(parts) != 3
            or parts[0] != self.live_prefix
            or not _NAME_RE.fullmatch(parts[1])
            or not _NAME_RE.fullmatch(parts[2])
        ):
            return Rejection(MALFORMED_TOPIC, f"topic {topic[:100]!r}")
        return parts[1], parts[2]

    def parse_payload(
        self, payload: bytes | bytearray, arrival: float
    ) -> tuple[float, float] | Rejection:
        """(value, ts in epoch seconds) or why not."""
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            return Rejection(INVALID_UTF8, "payload is not UTF-8")
        if text.startswith("{"):
            return self._parse_json(text, arrival)
        if _NUMBER_RE.fullmatch(text):
            value = self._check_value(float(text))
            return value if isinstance(value, Rejection) else (value, arrival)
        if text.lower() in _NON_FINITE_WORDS:
            return Rejection(NOT_FINITE, f"value {text!r}")
        return Rejection(NOT_A_NUMBER, f"payload {text[:40]!r} is neither a number nor JSON")

    def _parse_json(self, text: str, arrival: float) -> tuple[float, float] | Rejection:
        try:
            doc = json.loads(text, parse_constant=_reject_constant)
        except _NonFiniteError as exc:
            return Rejection(NOT_FINITE, f"JSON constant {exc}")
        except ValueError as exc:
            return Rejection(INVALID_JSON, f"invalid JSON: {exc}")
        except RecursionError:  # ~1000 nested brackets fit well inside the size limit
            return Rejection(INVALID_JSON, "JSON nested too deeply")
        if not isinstance(doc, dict):  # pragma: no cover - text starts with "{"
            return Rejection(INVALID_JSON, "JSON payload is not an object")
        raw = doc.get("value")
        if type(raw) is not float and type(raw) is not int:  # bool is not a reading
            return Rejection(NOT_A_NUMBER, f"JSON value {str(raw)[:40]!r} is not a number")
        try:
            number = float(raw)
        except OverflowError:  # an integer beyond float range
            return Rejection(OUT_OF_RANGE, "value beyond float range")
        value = self._check_value(number)
        if isinstance(value, Rejection):
            return value
        ts = self.parse_ts(doc.get("ts"), arrival)
        return ts if isinstance(ts, Rejection) else (value, ts)

    def _check_value(self, value: float) -> float | Rejection:
        if not math.isfinite(value):
            return Rejection(NOT_FINITE, f"value {value}")
        if not self.value_min <= value <= self.value_max:
            return Rejection(
                OUT_OF_RANGE, f"value {value:g} outside [{self.value_min:g}, {self.value_max:g}]"
            )
        return value

    def parse_ts(self, raw: object, arrival: float) -> float | Rejection:
        """Epoch seconds for a `ts` field (see the module docstring for the accepted forms)."""
        if raw is None:
            return arrival
        if type(raw) is int or type(raw) is float:
            try:
                ts = float(raw)
            except OverflowError:
                return Rejection(BAD_TS, "ts beyond float range")
            if not math.isfinite(ts):
                return Rejection(BAD_TS, f"ts {ts}")
            if abs(ts) >= MS_THRESHOLD:
                ts /= 1000.0
        elif isinstance(raw, str):
            parsed = parse_rfc3339(raw)
            if parsed is None:
                return Rejection(BAD_TS, f"ts {raw[:40]!r} is not RFC 3339 with a time zone")
            ts = parsed
        else:
            return Rejection(BAD_TS, f"ts of type {type(raw).__name__}")
        if ts <= 0:
            return Rejection(BAD_TS, f"ts {ts} is not after 1970")
        if ts > arrival + self.max_future_s:
            return Rejection(FUTURE_TS, f"ts {ts - arrival:.0f}s ahead of arrival")
        return ts


def format_rfc3339(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds (`2024-05-01T12:00:00.250Z`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> float | None:
    if not _RFC3339_RE.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text.upper()).timestamp()
    except ValueError:  # e.g. month 13, or a leap second
        return None
