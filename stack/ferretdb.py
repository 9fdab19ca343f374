"""The embedded MongoDB: FerretDB 1.24 on SQLite (built by scripts/bootstrap.sh)."""

from __future__ import annotations

from pathlib import Path

from deploy.host import find_binary


def argv(data_dir: Path, port: int, debug_port: int) -> list[str]:
    """FerretDB's command line: loopback only, data under `data_dir`, no telemetry."""
    return [
        find_binary("ferretdb"),
        "--handler=sqlite",
        f"--sqlite-url=file:{data_dir}/",
        f"--listen-addr=127.0.0.1:{port}",
        # Each instance needs its own debug port: the default 8088 would clash.
        f"--debug-addr=127.0.0.1:{debug_port}",
        "--telemetry=disable",
        "--log-level=warn",
    ]
