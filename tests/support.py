"""Helpers shared by the test folders: polling for a condition, reading Prometheus metrics.

One copy here instead of one per conftest; fixtures stay in each folder's conftest.py.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call `check` every `interval` s until it returns something truthy, and return that.

    `check` runs at least once. Past `timeout` s it raises AssertionError (a test failure, with
    `what` in the message) rather than returning a falsy value the caller could overlook.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


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


def scrape_metrics(port: int, timeout: float) -> dict[str, float]:
    """The metrics a local process serves on `http://127.0.0.1:<port>/metrics`."""
    return parse_metrics(http_text(f"http://127.0.0.1:{port}/metrics", timeout))
