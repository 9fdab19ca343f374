"""Real devnet nodes for the devnet and wallet tests.

`devnet_factory` is the reusable part: copy it (or import `tests.devnet_fixture.start_devnet`)
into another test folder to get nodes on free ports that are stopped at the end:

    @pytest.fixture(scope="module")
    def devnet_factory(tmp_path_factory):
        started = []

        def start(name="devnet", **options):
            proc, url = start_devnet(tmp_path_factory.mktemp(name), **options)
            started.append(proc)
            return Devnet(proc, url)

        yield start
        for proc in started:
            proc.stop()
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devnet import speedups
from stack import procs
from tests.devnet_fixture import start_devnet

# Every payment runs PyOTA in this process: use the identical but faster trit conversions.
speedups.install()

MILESTONE_INTERVAL_S = 0.5
# Milestones of a "manual" node come only from faucet calls: tests decide when one happens.
MANUAL_INTERVAL_S = 3600.0
HEADERS = {"Content-Type": "application/json", "X-IOTA-API-Version": "1"}
# One client for all requests: httpx.post() builds a new SSL context (~0.1 s) on every call.
http = httpx.Client(timeout=30)


@dataclass
class Devnet:
    proc: procs.Proc
    url: str
    workdir: Path

    def call(self, command: str, **params: Any) -> httpx.Response:
        """One IRI API command, raw (status and JSON checked by the caller)."""
        return http.post(self.url, json={"command": command, **params}, headers=HEADERS)

    def ok(self, command: str, **params: Any) -> dict[str, Any]:
        r = self.call(command, **params)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def faucet(self, address: str, value: int) -> httpx.Response:
        return http.post(f"{self.url}/faucet", json={"address": address, "value": value})

    def milestone_index(self) -> int:
        return int(self.ok("getNodeInfo")["latestMilestoneIndex"])

    def wait_milestones(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until `count` more milestones were issued."""
        target = self.milestone_index() + count
        deadline = time.monotonic() + timeout
        while self.milestone_index() < target:
            assert time.monotonic() < deadline, "no milestone"
            time.sleep(0.05)

    def journal(self) -> list[dict[str, Any]]:
        path = self.workdir / "data" / "journal.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


DevnetFactory = Callable[..., Devnet]


@pytest.fixture(scope="session")
def devnet_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevnetFactory]:
    started: list[procs.Proc] = []

    def start(name: str = "devnet", **options: Any) -> Devnet:
        workdir = tmp_path_factory.mktemp(name)
        proc, url = start_devnet(workdir, **options)
        started.append(proc)
        return Devnet(proc, url, workdir)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(scope="session")
def devnet(devnet_factory: DevnetFactory) -> Devnet:
    """The shared node: a milestone every 0.5 s."""
    return devnet_factory("devnet", milestone_interval=MILESTONE_INTERVAL_S)


@pytest.fixture(scope="session")
def manual_devnet(devnet_factory: DevnetFactory) -> Devnet:
    """A node that issues milestones only when its faucet is used."""
    return devnet_factory("devnet-manual", milestone_interval=MANUAL_INTERVAL_S)
