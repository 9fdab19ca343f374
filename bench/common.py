"""Shared helpers for benchmarks: result files and percentiles."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def write_result(name: str, figures: dict[str, Any]) -> Path:
    """Print the figures and write them, with when and where they were measured."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": _cpu_count(), "python": platform.python_version()},
        **figures,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"== {name} ==")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    print(f"  -> {path}")
    return path


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 0
