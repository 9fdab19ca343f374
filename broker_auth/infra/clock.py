"""Time in one place: UTC, millisecond precision (what BSON dates keep), RFC 3339 text."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return truncate(dt.datetime.now(dt.UTC))


def truncate(value: dt.datetime) -> dt.datetime:
    """Drop sub-millisecond digits, so a value compares equal after a round trip via MongoDB."""
    value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def as_utc(value: dt.datetime) -> dt.datetime:
    """MongoDB hands back naive or fixed-offset datetimes; make them aware UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def rfc3339(value: dt.datetime) -> str:
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")
