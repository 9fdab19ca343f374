"""Plain HTTP reads for the tests and benchmarks: a page as text, a Prometheus page as numbers."""

from __future__ import annotations

import urllib.request


def http_text(url: str, timeout: float = 10.0) -> str:
    """GET `url` and return the body as text (urllib: no client to set up or close)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition -> {'name{labels}': value}; comment lines are skipped."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def scrape_metrics(url: str, timeout: float = 10.0) -> dict[str, float]:
    """The metrics a process serves at `url` (its /metrics page)."""
    return parse_metrics(http_text(url, timeout))
