"""Append-only JSON-lines journal of everything that changes the node's state.

Records are written (and fsync'ed) before the change is visible to clients, so a node killed at
any moment restarts with every answer it gave still true. A torn last line (killed mid-write)
is cut off on open; anything else unreadable is an error, not silently skipped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Record = dict[str, Any]


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - kept open for the node's lifetime

    def append(self, record: Record) -> None:
        self._file.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read(path: Path) -> Iterator[Record]:
    """Yield the records of an existing journal, repairing a torn final line first."""
    if not path.exists():
        return
    data = path.read_bytes()
    good_end = data.rfind(b"\n") + 1
    if good_end < len(data):
        log.warning(
            "journal %s: dropping a torn last record (%d bytes)", path, len(data) - good_end
        )
        with open(path, "r+b") as f:
            f.truncate(good_end)
    for number, line in enumerate(data[:good_end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"journal {path} line {number} is corrupt: {exc}") from None
        if not isinstance(record, dict):
            raise ValueError(f"journal {path} line {number} is not a record")
        yield record
