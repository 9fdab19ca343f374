"""The IRI HTTP API surface: shapes PyOTA relies on, and 400 (never 500) for bad requests."""

from __future__ import annotations

import pytest

from devnet import curl, ternary
from tests.devnet.conftest import HEADERS, Devnet, http

NULL_TX = "9" * ternary.TRANSACTION_TRYTES
SOME_HASH = "A" * 81


def test_node_info_and_configuration(devnet: Devnet) -> None:
    info = devnet.ok("getNodeInfo")
    assert info["appName"] == "devnet"
    assert ternary.is_trytes(info["latestMilestone"], 81)
    assert info["latestSolidSubtangleMilestone"] == info["latestMilestone"]
    assert info["latestMilestoneIndex"] >= 1
    assert info["latestSolidSubtangleMilestoneIndex"] == info["latestMilestoneIndex"]
    assert isinstance(info["time"], int) and isinstance(info["duration"], int)
    config = devnet.ok("getNodeAPIConfiguration")
    assert config["minWeightMagnitude"] == 1 and config["testNet"] is True


def test_milestones_advance(devnet: Devnet) -> None:
    first = devnet.ok("getNodeInfo")
    devnet.wait_milestones(2)
    later = devnet.ok("getNodeInfo")
    assert later["latestMilestone"] != first["latestMilestone"]
    # Any milestone is a valid tip for getInclusionStates, as with IRI.
    states = devnet.ok(
        "getInclusionStates", transactions=[SOME_HASH], tips=[first["latestMilestone"]]
    )
    assert states["states"] == [False]


def test_tips_and_transactions_to_approve(devnet: Devnet) -> None:
    assert isinstance(devnet.ok("getTips")["hashes"], list)
    gtta = devnet.ok("getTransactionsToApprove", depth=3)
    assert ternary.is_trytes(gtta["trunkTransaction"], 81)
    assert ternary.is_trytes(gtta["branchTransaction"], 81)


def test_unknown_transactions(devnet: Devnet) -> None:
    assert devnet.ok("getTrytes", hashes=[SOME_HASH])["trytes"] == [NULL_TX]
    assert devnet.ok("findTransactions", addresses=[SOME_HASH])["hashes"] == []
    assert devnet.ok("findTransactions", tags=["NOSUCHTAG"])["hashes"] == []
    balances = devnet.ok("getBalances", addresses=[SOME_HASH], threshold=100)
    assert balances["balances"] == ["0"]
    assert balances["milestoneIndex"] >= 1 and len(balances["references"]) == 1
    assert devnet.ok("wereAddressesSpentFrom", addresses=[SOME_HASH])["states"] == [False]


def test_store_needs_proof_of_work(devnet: Devnet) -> None:
    # A transaction whose hash ends in a non-zero trit misses even weight magnitude 1.
    body = ternary.from_int(5, 2673 - 27)
    for n in range(1000):
        trytes = body + ternary.from_int(n, 27)
        if ternary.trailing_zero_trits(curl.hash_trytes(trytes)) == 0:
            break
    r = devnet.call("storeTransactions", trytes=[trytes])
    assert r.status_code == 400 and "weight" in r.json()["error"]


def test_attach_refuses_too_low_or_too_high_weight(devnet: Devnet) -> None:
    params = {"trunkTransaction": SOME_HASH, "branchTransaction": SOME_HASH, "trytes": [NULL_TX]}
    too_hard = devnet.call("attachToTangle", minWeightMagnitude=14, **params)
    assert too_hard.status_code == 400 and "too high" in too_hard.json()["error"]
    too_easy = devnet.call("attachToTangle", minWeightMagnitude=0, **params)
    assert too_easy.status_code == 400


BAD_COMMANDS = [
    {"command": "sendTransfer"},  # an extended (client-side) command, unknown to IRI
    {"command": "noSuchCommand"},
    {"command": 42},
    {},
    {"command": "findTransactions"},
    {"command": "findTransactions", "addresses": "not-a-list"},
    {"command": "findTransactions", "addresses": ["abc"]},
    {"command": "findTransactions", "tags": ["T" * 28]},
    {"command": "findTransactions", "bundles": [None]},
    {"command": "getTrytes"},
    {"command": "getTrytes", "hashes": ["x" * 81]},
    {"command": "getBalances", "addresses": [SOME_HASH], "threshold": 101},
    {"command": "getBalances", "addresses": [SOME_HASH], "threshold": "100"},
    {"command": "getBalances", "addresses": [SOME_HASH], "tips": [SOME_HASH]},
    {"command": "getInclusionStates", "transactions": [SOME_HASH], "tips": [SOME_HASH]},
    {"command": "getInclusionStates"},
    {"command": "getTransactionsToApprove", "depth": 0},
    {"command": "getTransactionsToApprove", "depth": True},
    {"command": "getTransactionsToApprove", "depth": 3, "reference": SOME_HASH},
    {"command": "attachToTangle", "trytes": [NULL_TX], "minWeightMagnitude": 1},
    {
        "command": "attachToTangle",
        "trunkTransaction": SOME_HASH,
        "branchTransaction": SOME_HASH,
        "minWeightMagnitude": 1,
        "trytes": ["ABC"],
    },
    {"command": "storeTransactions", "trytes": []},
    {"command": "storeTransactions", "trytes": ["abc"]},
    {"command": "broadcastTransactions", "trytes": [1]},
    {"command": "checkConsistency", "tails": [SOME_HASH]},
    {"command": "checkConsistency", "tails": []},
    {"command": "wereAddressesSpentFrom", "addresses": [SOME_HASH + "A"]},
]


@pytest.mark.parametrize("body", BAD_COMMANDS, ids=[str(b)[:60] for b in BAD_COMMANDS])
def test_bad_commands_are_400(devnet: Devnet, body: dict[str, object]) -> None:
    r = http.post(devnet.url, json=body, headers=HEADERS)
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["error"], str)


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({}, b'{"command": "getNodeInfo"}'),  # no API version header
        ({"X-IOTA-API-Version": "2"}, b'{"command": "getNodeInfo"}'),
        (HEADERS, b'{"command": "getNodeInfo"'),  # malformed JSON
        (HEADERS, b"[1, 2]"),  # not an object
        (HEADERS, b"\xff\xfe"),  # not UTF-8
        (HEADERS, b""),
        (HEADERS, b'{"command": "getNodeInfo", "pad": "' + b"9" * 1_000_001 + b'"}'),
    ],
)
def test_bad_http_requests_are_400(devnet: Devnet, headers: dict[str, str], content: bytes) -> None:
    r = http.post(devnet.url, content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"address": "' + b"A" * 81 + b'"}',
        b'{"address": "' + b"A" * 81 + b'", "value": 0}',
        b'{"address": "' + b"A" * 81 + b'", "value": -5}',
        b'{"address": "' + b"A" * 81 + b'", "value": 1.5}',
        b'{"address": "' + b"A" * 81 + b'", "value": "10"}',
        b'{"address": "' + b"A" * 81 + b'", "value": true}',
        b'{"address": "' + b"A" * 81 + b'", "value": 10000000000000000000}',
        b'{"address": "abc", "value": 10}',
        b'{"address": 7, "value": 10}',
        b'{"address": "' + b"A" * 90 + b'", "value": 10}',  # wrong checksum
    ],
)
def test_bad_faucet_requests_are_400(devnet: Devnet, body: bytes) -> None:
    r = http.post(f"{devnet.url}/faucet", content=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]
