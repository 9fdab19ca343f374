"""`make bench`: run every benchmark (or those named on the command line)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["ingest", "acl", "access", "soak"]


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    failed = []
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                print(f"== {name} == not written yet, skipped")
                continue
            raise
        if module.main() != 0:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
