"""Helpers shared by the test folders: polling for a condition (HTTP and metrics reads are in
`stack.scrape`, shared with the benchmarks).

One copy here instead of one per conftest; fixtures stay in each folder's conftest.py.
"""

from __future__ import annotations

import time
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
