"""The machine a process of this project runs on: where its binaries are, a free TCP port,
whether a local URL answers, and handing SIGTERM/SIGINT on to a child it wraps. Used by
`make run` (stack/), the devnet and the test harness alike.

Binaries are looked up in `.tools/bin` (built by scripts/bootstrap.sh), then next to the running
Python (the virtualenv), then on PATH (the Docker image: /usr/local/bin/hornet).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def find_binary(name: str) -> str:
    for candidate in (REPO_ROOT / ".tools" / "bin" / name, VENV_BIN / name):
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise FileNotFoundError(f"{name} not found; run scripts/bootstrap.sh")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return 200 <= int(r.status) < 300
    except OSError:
        return False


def forward_signals(child: subprocess.Popen[bytes]) -> None:
    """From now on, SIGTERM and SIGINT sent to this process go to `child` instead: it decides
    how to stop, and this process waits for it."""

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
