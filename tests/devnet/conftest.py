"""The devnet tests' node: the session's Hornet tangle (tests/conftest.py), with a call helper."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from testing import procs

HEADERS = procs.IOTA_API_HEADERS
# One client for all requests: httpx.post() builds a new SSL context (~0.1 s) on every call.
http = httpx.Client(timeout=60)


class Node:
    def __init__(self, net: procs.Devnet) -> None:
        self.net = net
        self.url = net.url

    def call(self, command: str, **params: Any) -> httpx.Response:
        """One IRI API command, raw (status and JSON checked by the caller)."""
        return http.post(self.url, json={"command": command, **params}, headers=HEADERS)

    def ok(self, command: str, **params: Any) -> dict[str, Any]:
        r = self.call(command, **params)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def faucet(self, address: str, value: int) -> httpx.Response:
        return http.post(f"{self.net.faucet_url}/faucet", json={"address": address, "value": value})

    def milestone_index(self) -> int:
        return int(self.ok("getNodeInfo")["latestSolidSubtangleMilestoneIndex"])


@pytest.fixture(scope="session")
def node(devnet: procs.Devnet) -> Node:
    return Node(devnet)
