"""What Grafana does to a Flux query before sending it, so the tests can send the same text.

- Flux variables (Grafana's backend, pkg/tsdb/influxdb/flux/macros.go): `v.timeRangeStart` and
  `v.timeRangeStop` become RFC 3339 UTC times, `v.windowPeriod` the query interval as Go
  formats a duration (`10s`, `1m0s`, `500ms`), `v.defaultBucket` the data source's default
  bucket in quotes; `$__interval` and `$__interval_ms` the interval too.
- Dashboard variables (Grafana's frontend): `${name:regex}` becomes the selected value with
  regex metacharacters escaped, several values as `(a|b)`, and "All" as the variable's
  `allValue`; `$name` and `${name}` the plain value.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALL = "$__all"
_FLUX_VARIABLE = re.compile(r"\bv\.(timeRangeStart|timeRangeStop|windowPeriod|defaultBucket)\b")
_DASHBOARD_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
# Characters Grafana's regex formatter escapes (lodash escapeRegExp's set, as Grafana uses it).
_REGEX_META = re.compile(r"[\\^$.*+?()[\]{}|/]")


def go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration.String() writes it, for whole milliseconds."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest // 1000}" if rest % 1000 == 0 else f"{rest / 1000:g}"
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Variable:
    name: str
    all_value: str | None


def format_value(values: Sequence[str], fmt: str | None, all_value: str | None) -> str:
    if list(values) == [ALL]:
        if all_value is None:  # Grafana would send every option; the tests always set one
            raise ValueError("'All' selected on a variable without allValue")
        return all_value
    if fmt == "regex":
        escaped = [_REGEX_META.sub(lambda m: "\\" + m.group(0), v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    return ",".join(values) if len(values) > 1 else values[0]


def interpolate(
    query: str,
    *,
    start: dt.datetime,
    stop: dt.datetime,
    interval_s: float,
    default_bucket: str,
    variables: Mapping[str, Variable] | None = None,
    selected: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The Flux text Grafana sends for `query` with this time range and these selections."""
    variables, selected = variables or {}, selected or {}

    def dashboard(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name not in variables:
            return m.group(0)  # a Grafana global ($__interval), handled below
        return format_value(selected.get(name, [ALL]), m.group(2), variables[name].all_value)

    text = _DASHBOARD_VARIABLE.sub(dashboard, query)
    flux = {
        "timeRangeStart": rfc3339(start),
        "timeRangeStop": rfc3339(stop),
        "windowPeriod": go_duration(interval_s),
        "defaultBucket": json.dumps(default_bucket),
    }
    text = _FLUX_VARIABLE.sub(lambda m: flux[m.group(1)], text)
    text = text.replace("$__interval_ms", str(round(interval_s * 1000)))
    return text.replace("$__interval", go_duration(interval_s))


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    panel_type: str
    datasource_uid: str
    query: str
    ref: str


def dashboards(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(folder.glob("*.json")):
        yield path.stem, json.loads(path.read_text())


def panels(doc: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for panel in doc.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # rows that hold panels


def targets(folder: Path) -> list[Target]:
    """Every query of every panel of every dashboard in `folder`."""
    found: list[Target] = []
    for name, doc in dashboards(folder):
        for panel in panels(doc):
            for t in panel.get("targets", []):
                uid = (t.get("datasource") or panel.get("datasource") or {}).get("uid", "")
                found.append(
                    Target(
                        name,
                        str(panel.get("title", "")),
                        str(panel.get("type", "")),
                        str(uid),
                        str(t.get("query") or t.get("expr") or ""),
                        str(t.get("refId", "")),
                    )
                )
    return found


def template_variables(doc: Mapping[str, Any]) -> dict[str, Variable]:
    return {
        v["name"]: Variable(v["name"], v.get("allValue"))
        for v in doc.get("templating", {}).get("list", [])
    }


def variable_queries(doc: Mapping[str, Any]) -> dict[str, str]:
    return {
        v["name"]: str(v.get("query") or v.get("definition") or "")
        for v in doc.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    }
