"""IRI's HTTP API (`POST /` with `{"command": ...}`) and the devnet faucet (`POST /faucet`).

Request checking follows IRI 1.8: the `X-IOTA-API-Version: 1` header is required, every
error is a 400 `{"error": ...}` (500 `{"exception": ...}` only for a bug), and each answer
carries `duration` in milliseconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from iota import Address

from devnet import ternary
from devnet.node import Node
from devnet.tangle import NodeError
from devnet.transaction import BAD_TRYTES

log = logging.getLogger(__name__)

API_VERSION = "1"
MAX_BODY_BYTES = 1_000_000
MAX_REQUEST_LIST = 1000
MAX_GET_TRYTES = 10_000
MAX_DEPTH = 15
APP_NAME = "devnet"
APP_VERSION = "0.1.0"

Params = dict[str, Any]
Answer = dict[str, Any]


# ------------------------------------------------------------------ parameter checks


def _list(params: Params, key: str, required: bool = True) -> list[Any] | None:
    value = params.get(key)
    if value is None:
        if required:
            raise NodeError(f"Invalid parameters: '{key}' is required")
        return None
    if not isinstance(value, list):
        raise NodeError(f"Invalid {key} input: expected a list")
    return value


def _hashes(params: Params, key: str, required: bool = True) -> list[str] | None:
    values = _list(params, key, required)
    if values is None:
        return None
    if len(values) > MAX_GET_TRYTES:
        raise NodeError(f"Invalid {key} input: too many values (max {MAX_GET_TRYTES})")
    for value in values:
        if not ternary.is_trytes(value, ternary.HASH_TRYTES):
            raise NodeError(f"Invalid {key} input: {value!r} is not an 81-tryte hash")
    return values


def _addresses(params: Params, key: str, required: bool = True) -> list[str] | None:
    """Addresses with (90 trytes) or without (81) checksum; answers use the 81-tryte form."""
    values = _list(params, key, required)
    if values is None:
        return None
    out = []
    for value in values:
        if not (ternary.is_trytes(value, 81) or ternary.is_trytes(value, 90)):
            raise NodeError(f"Invalid addresses input: {value!r} is not an 81/90-tryte address")
        out.append(value[:81])
    return out


def _tags(params: Params) -> list[str] | None:
    values = _list(params, "tags", required=False)
    if values is None:
        return None
    for value in values:
        if not ternary.is_trytes(value) or not 0 < len(value) <= ternary.TAG_TRYTES:
            raise NodeError(f"Invalid tags input: {value!r} is not a tag of up to 27 trytes")
    return [ternary.pad_tag(v) for v in values]


def _int(params: Params, key: str, default: int | None = None) -> int:
    value = params.get(key, default)
    if value is None:
        raise NodeError(f"Invalid parameters: '{key}' is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise NodeError(f"Invalid {key} input: expected an integer")
    return value


def _trytes_list(params: Params) -> list[str]:
    values = _list(params, "trytes")
    assert values is not None
    if not values:
        raise NodeError("Invalid trytes input: empty list")
    if len(values) > MAX_REQUEST_LIST:
        raise NodeError(f"Invalid trytes input: too many transactions (max {MAX_REQUEST_LIST})")
    for value in values:
        if not ternary.is_trytes(value, ternary.TRANSACTION_TRYTES):
            raise NodeError(BAD_TRYTES)
    return values


# ------------------------------------------------------------------ commands


def get_node_info(node: Node, params: Params) -> Answer:
    tangle = node.tangle
    with tangle.lock:
        latest = tangle.latest
        stats = tangle.stats()
    return {
        "appName": APP_NAME,
        "appVersion": APP_VERSION,
        "jreAvailableProcessors": 1,
        "latestMilestone": latest.hash,
        "latestMilestoneIndex": latest.index,
        "latestSolidSubtangleMilestone": latest.hash,
        "latestSolidSubtangleMilestoneIndex": latest.index,
        "milestoneStartIndex": 0,
        "lastSnapshottedMilestoneIndex": 0,
        "neighbors": 0,
        "packetsQueueSize": 0,
        "time": int(time.time() * 1000),
        "tips": stats["tips"],
        "transactionsToRequest": 0,
        "features": ["devnet", "faucet"],
        "coordinatorAddress": ternary.NULL_HASH,
        "transactions": stats["transactions"],
    }


def get_node_api_configuration(node: Node, params: Params) -> Answer:
    return {
        "maxFindTransactions": 100_000,
        "maxRequestsList": MAX_REQUEST_LIST,
        "maxGetTrytes": MAX_GET_TRYTES,
        "maxBodyLength": MAX_BODY_BYTES,
        "testNet": True,
        "milestoneStartIndex": 0,
        "minWeightMagnitude": node.min_weight_magnitude,
    }


def get_tips(node: Node, params: Params) -> Answer:
    return {"hashes": node.tangle.tips()}


def get_transactions_to_approve(node: Node, params: Params) -> Answer:
    depth = _int(params, "depth")
    if not 1 <= depth <= MAX_DEPTH:
        raise NodeError(f"Invalid depth input: must be 1..{MAX_DEPTH}")
    reference = params.get("reference")
    if reference is not None:
        if not ternary.is_trytes(reference, ternary.HASH_TRYTES):
            raise NodeError("Invalid reference input: not an 81-tryte hash")
        if not node.tangle.known(reference):
            raise NodeError(f"Invalid reference: transaction {reference} is unknown")
    with node.tangle.lock:
        trunk = node.tangle.latest.hash
    branch = reference or node.tangle.random_tip() or trunk
    return {"trunkTransaction": trunk, "branchTransaction": branch}


def attach_to_tangle(node: Node, params: Params) -> Answer:
    trunk = params.get("trunkTransaction")
    branch = params.get("branchTransaction")
    for name, value in (("trunkTransaction", trunk), ("branchTransaction", branch)):
        if not ternary.is_trytes(value, ternary.HASH_TRYTES):
            raise NodeError(f"Invalid {name} input: not an 81-tryte hash")
    assert isinstance(trunk, str) and isinstance(branch, str)
    mwm = _int(params, "minWeightMagnitude")
    trytes = _trytes_list(params)
    return {"trytes": node.attach(trytes, trunk, branch, mwm)}


def store_transactions(node: Node, params: Params) -> Answer:
    node.tangle.store(_trytes_list(params))
    return {}


def interrupt_attaching_to_tangle(node: Node, params: Params) -> Answer:
    return {}


def find_transactions(node: Node, params: Params) -> Answer:
    criteria = {
        "addresses": _addresses(params, "addresses", required=False),
        "bundles": _hashes(params, "bundles", required=False),
        "tags": _tags(params),
        "approvees": _hashes(params, "approvees", required=False),
    }
    if all(v is None for v in criteria.values()):
        raise NodeError(
            "Invalid parameters: give at least one of addresses, bundles, tags, approvees"
        )
    return {"hashes": node.tangle.find(**criteria)}


def get_trytes(node: Node, params: Params) -> Answer:
    hashes = _hashes(params, "hashes")
    assert hashes is not None
    return {"trytes": node.tangle.trytes(hashes)}


def get_balances(node: Node, params: Params) -> Answer:
    addresses = _addresses(params, "addresses")
    assert addresses is not None
    threshold = _int(params, "threshold", 100)
    if not 0 <= threshold <= 100:
        raise NodeError("Illegal 'threshold': must be 0..100")
    tips = _hashes(params, "tips", required=False) or []
    for tip in tips:
        if not node.tangle.known(tip):
            raise NodeError(f"Tips are not consistent: {tip} is unknown")
    with node.tangle.lock:
        balances = node.tangle.confirmed_balances(addresses)
        latest = node.tangle.latest
    return {
        "balances": [str(b) for b in balances],
        "references": [latest.hash],
        "milestoneIndex": latest.index,
    }


def get_inclusion_states(node: Node, params: Params) -> Answer:
    hashes = _hashes(params, "transactions")
    assert hashes is not None
    tips = _hashes(params, "tips", required=False) or []
    return {"states": node.tangle.inclusion_states(hashes, tips)}


def were_addresses_spent_from(node: Node, params: Params) -> Answer:
    addresses = _addresses(params, "addresses")
    assert addresses is not None
    return {"states": node.tangle.spent(addresses)}


def check_consistency(node: Node, params: Params) -> Answer:
    tails = _hashes(params, "tails")
    assert tails is not None
    if not tails:
        raise NodeError("Invalid tails input: empty list")
    state, info = node.tangle.consistency(tails)
    return {"state": state, "info": info} if not state else {"state": True}


def get_missing_transactions(node: Node, params: Params) -> Answer:
    return {"hashes": []}


def get_neighbors(node: Node, params: Params) -> Answer:
    return {"neighbors": []}


def add_neighbors(node: Node, params: Params) -> Answer:
    return {"addedNeighbors": 0}


def remove_neighbors(node: Node, params: Params) -> Answer:
    return {"removedNeighbors": 0}


COMMANDS: dict[str, Callable[[Node, Params], Answer]] = {
    "getNodeInfo": get_node_info,
    "getNodeAPIConfiguration": get_node_api_configuration,
    "getTips": get_tips,
    "getTransactionsToApprove": get_transactions_to_approve,
    "attachToTangle": attach_to_tangle,
    "interruptAttachingToTangle": interrupt_attaching_to_tangle,
    "storeTransactions": store_transactions,
    # A single node: broadcasting means storing (PyOTA calls both; storing twice is a no-op).
    "broadcastTransactions": store_transactions,
    "findTransactions": find_transactions,
    "getTrytes": get_trytes,
    "getBalances": get_balances,
    "getInclusionStates": get_inclusion_states,
    "wereAddressesSpentFrom": were_addresses_spent_from,
    "checkConsistency": check_consistency,
    "getMissingTransactions": get_missing_transactions,
    "getNeighbors": get_neighbors,
    "addNeighbors": add_neighbors,
    "removeNeighbors": remove_neighbors,
}


# ------------------------------------------------------------------ HTTP


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message, "duration": 0}, status_code=status)


def _json_object(body: bytes) -> Params:
    if len(body) > MAX_BODY_BYTES:
        raise NodeError(f"Request too long: more than {MAX_BODY_BYTES} bytes")
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NodeError(f"Invalid JSON syntax: {exc}") from None
    if not isinstance(value, dict):
        raise NodeError("Invalid JSON: the request must be an object")
    return value


def handle_command(node: Node, version: str | None, body: bytes) -> JSONResponse:
    started = time.monotonic()
    if version != API_VERSION:
        return _error("Invalid API Version")
    try:
        params = _json_object(body)
        command = params.get("command")
        if not isinstance(command, str):
            raise NodeError("COMMAND parameter has not been specified in the request.")
        handler = COMMANDS.get(command)
        if handler is None:
            raise NodeError(f"Command [{command}] is unknown")
        answer = handler(node, params)
    except NodeError as exc:
        return _error(str(exc))
    except Exception as exc:  # a bug, not bad input: IRI's 500 shape
        log.exception("command failed")
        return JSONResponse({"exception": str(exc)}, status_code=500)
    answer["duration"] = int((time.monotonic() - started) * 1000)
    return JSONResponse(answer)


def handle_faucet(node: Node, body: bytes) -> JSONResponse:
    try:
        params = _json_object(body)
        address = params.get("address")
        value = params.get("value")
        if not (ternary.is_trytes(address, 81) or ternary.is_trytes(address, 90)):
            raise NodeError("address must be 81 trytes, or 90 with checksum")
        assert isinstance(address, str)
        if len(address) == 90 and not Address(address).is_checksum_valid():
            raise NodeError("address checksum is invalid")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise NodeError("value must be an integer > 0")
        return JSONResponse(node.credit(address[:81], value))
    except NodeError as exc:
        return _error(str(exc))


def create_app(node: Node) -> FastAPI:
    app = FastAPI(title="IOTA devnet", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/")
    async def command(request: Request) -> JSONResponse:
        body = await request.body()
        version = request.headers.get("X-IOTA-API-Version")
        # PoW and signature checks are CPU-bound: keep the event loop free.
        return await run_in_threadpool(handle_command, node, version, body)

    @app.post("/faucet")
    async def faucet(request: Request) -> JSONResponse:
        body = await request.body()
        return await run_in_threadpool(handle_faucet, node, body)

    return app
