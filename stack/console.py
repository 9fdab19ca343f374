"""`make run`'s console: the project's own warnings and errors, a short prefix each, and quiet
otherwise.

Every process writes its whole log to `.data/logs/<program>.log` (supervisord rotates them);
this follows the project's own services' files and prints their WARNING, ERROR and CRITICAL
records (with the traceback lines that follow one), and supervisord's news of a process that
exited unexpectedly or gave up. Before the stack is up only errors are shown: the start is
full of expected "not reachable yet" warnings while the parts come up in turn. The broker, the
node, the stores and Prometheus stay in their files (`tail -F .data/logs/hornet.log`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# The project's own services (supervisord program names, or their prefix before "-N").
OWN = (
    "broker_auth",
    "ingest",
    "averager",
    "simulator",
    "faucet",
    "pool-keeper",
    "broker_metrics",
)
SUPERVISOR = "supervisord"
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S* (\w+) ")
_SHOWN_ALWAYS = {"ERROR", "CRITICAL", "FATAL"}
_SUPERVISOR_NEWS = ("not expected", "gave up:", "FATAL", "CRIT ")
# supervisord's CRIT about its control socket, which is mode 0700 in .data/run: not news.
_SUPERVISOR_NOISE = ("without any HTTP authentication checking",)
MAX_FOLLOWING_LINES = 30  # of a traceback under a shown record
POLL_S = 0.5


def is_own(program: str) -> bool:
    return program.split("-")[0] in OWN or program in OWN


@dataclass
class RecordFilter:
    """Which lines of one program's log the console shows."""

    program: str
    warnings: bool = False  # WARNING records too (after the stack is up)
    _following: int = field(default=0, repr=False)  # continuation lines still to show

    def keep(self, line: str) -> bool:
        if self.program == SUPERVISOR:
            return any(n in line for n in _SUPERVISOR_NEWS) and not any(
                n in line for n in _SUPERVISOR_NOISE
            )
        record = _RECORD.match(line)
        if record is None:  # a continuation line: a traceback under the record above
            if self._following > 0:
                self._following -= 1
                return True
            return False
        level = record.group(1)
        shown = level in _SHOWN_ALWAYS or (self.warnings and level == "WARNING")
        self._following = MAX_FOLLOWING_LINES if shown else 0
        return shown


@dataclass
class Follower:
    """New whole lines of a file that may not exist yet, be truncated or rotated away."""

    path: Path
    _offset: int = 0
    _inode: int | None = None
    _partial: str = ""

    def new_lines(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self._inode or stat.st_size < self._offset:  # rotated or truncated
            self._inode, self._offset, self._partial = stat.st_ino, 0, ""
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(stat.st_size - self._offset)
        self._offset += len(chunk)
        text = self._partial + chunk.decode("utf-8", errors="replace")
        *lines, self._partial = text.split("\n")
        return lines


class Console(threading.Thread):
    def __init__(
        self,
        logs: Path,
        programs: Iterable[str],
        write: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        super().__init__(name="console", daemon=True)
        watched = [p for p in programs if is_own(p)] + [SUPERVISOR]
        self.width = max(len(p) for p in watched)
        # Start at the files' ends: an earlier run's lines are in the files, not news.
        self._followed = [(Follower(logs / f"{p}.log"), RecordFilter(p)) for p in watched]
        for follower, _ in self._followed:
            follower.new_lines()
        self._write = write
        self._stop = threading.Event()

    def stack_is_up(self) -> None:
        """From now on warnings are shown too."""
        for _, record_filter in self._followed:
            record_filter.warnings = True

    def run(self) -> None:
        while not self._stop.wait(POLL_S):
            self.show_new()

    def show_new(self) -> None:
        for follower, record_filter in self._followed:
            for line in follower.new_lines():
                if record_filter.keep(line):
                    self._write(f"{record_filter.program:<{self.width}} | {line}")

    def stop(self) -> None:
        self._stop.set()
        self.show_new()


def log_dir(data: Path) -> Path:
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    os.chmod(logs, 0o700)  # the logs name accounts and addresses: the operator's only
    return logs
