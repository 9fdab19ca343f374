"""Fixtures of the fault tests: one whole stack per module, and the figures they measure.

The figures (recovery times, readings buffered) are printed at the end of the run and written
to tests/artifacts/faults.json after every test, so a run stopped by -x keeps what it measured.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.stack import (
    INGEST_ENV,
    MILESTONE_INTERVAL_S,
    WATCHER_INTERVAL_S,
    WATCHER_MAX_BACKOFF_S,
    FaultStack,
    start_stack,
)

ARTIFACT = Path(__file__).resolve().parent.parent / "artifacts" / "faults.json"
FIGURES: dict[str, dict[str, Any]] = {}
SETUP = {
    "load": "2 devices x 15 readings/s at QoS 1; one buyer paying 60 s orders back to back",
    "outage_s": 4,
    "hornet_milestone_interval_s": MILESTONE_INTERVAL_S,
    "watcher_interval_s": WATCHER_INTERVAL_S,
    "watcher_max_backoff_s": WATCHER_MAX_BACKOFF_S,
    "ingest": INGEST_ENV,
}
DEFINITIONS = {
    "outage_s": "kill (or stop) -> Proc.start() called again",
    "restart_to_ready_s": "Proc.start() -> the process answers its readiness check",
    "kill_to_health_200_s": "kill -> broker_auth /healthz 200 again after the restart",
    "kill_to_first_reading_stored_s": "kill -> the worker's first store write after the kill",
    "max_store_gap_s": "longest time without a store write seen by the sampler (0.1 s)",
    "ingest_buffer_max": "peak ingest_buffer_depth (received, not yet acknowledged)",
    "device_queue_max": "peak readings published and not yet acknowledged by the broker",
    "readings_held": "accepted readings published between the kill and the first store "
    "write after it (held by devices, broker queue or worker)",
    "short_grant_end_to_refused_s": "end of a grant that ends in the outage -> first refusal "
    "of a fresh subscription",
    "short_grant_last_granted_after_end_s": "latest fresh subscription still granted after "
    "that end (null: none)",
    "lost / duplicates": "accepted readings missing / stored twice (at a timestamp never sent)"
    " in InfluxDB",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    s = start_stack(tmp_path_factory.mktemp("faults"))
    try:
        yield s
    finally:
        s.stop()


def record(name: str, figures: dict[str, Any]) -> None:
    FIGURES[name] = figures
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        "setup": SETUP,
        "definitions": DEFINITIONS,
        "faults": FIGURES,
    }
    ARTIFACT.write_text(json.dumps(doc, indent=2) + "\n")


COLUMNS = (
    ("action", "action"),
    ("outage_s", "outage s"),
    ("kill_to_health_200_s", "kill->health 200 s"),
    ("kill_to_first_reading_stored_s", "kill->reading stored s"),
    ("ingest_buffer_max", "ingest buffer max"),
    ("device_queue_max", "device queue max"),
    ("readings_held", "readings held"),
    ("readings_accepted", "accepted"),
    ("lost", "lost"),
    ("duplicates", "dup"),
    ("payments", "payments"),
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    rows = [["fault", *(title for _, title in COLUMNS)]]
    for name, f in FIGURES.items():
        rows.append([name, *(_cell(f.get(key)) for key, _ in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    terminalreporter.write_sep("-", f"fault recovery figures (also in {ARTIFACT.name})")
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        terminalreporter.write_line("  ".join(cells))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)
