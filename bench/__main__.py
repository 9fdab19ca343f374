"""`make bench`: run every benchmark (or those named on the command line)."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = ["ingest", "acl", "access", "watcher", "store_kill", "store_shapes", "soak"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run benchmarks; each prints its figures and writes bench/results/<name>.json.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"run only these ({', '.join(BENCHMARKS)})"
    )
    names = parser.parse_args(argv).names or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    failed = [name for name in names if importlib.import_module(f"bench.{name}").main() != 0]
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
