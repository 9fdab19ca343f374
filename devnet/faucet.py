"""The devnet faucet: real signed transfers from the genesis seed, answered once confirmed.

`POST /faucet {"address", "value"}` queues a credit. One worker thread sends the queued credits
as one bundle per round (an output each, the genesis input, the rest to the next genesis
address), waits until a milestone confirms it, and answers every request of the round. A
genesis address signs exactly one bundle (W-OTS keys are one-time): a round that fails after
signing re-sends the same signed bundle until it confirms, and the next round starts from the
change address. The index of the funded genesis address is kept in `faucet.state` beside the
seed, and checked against the ledger at start; a signed bundle is kept in `faucet.signed.json`
until it is confirmed, so a round cut short (node down, faucet killed) sends that same bundle
again instead of signing another one with the same key.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from iota import (
    Address,
    BundleHash,
    Iota,
    ProposedBundle,
    ProposedTransaction,
    Tag,
    Transaction,
    TransactionTrytes,
)
from iota.adapter import HttpAdapter
from iota.crypto.addresses import AddressGenerator
from iota.crypto.signing import KeyGenerator
from iota.crypto.types import Seed
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import AfterValidator, BaseModel, Field

from broker_auth.ledger import speedups, ternary

log = logging.getLogger(__name__)

SECURITY_LEVEL = 2
FAUCET_TAG = Tag(b"DEVNET9FAUCET")
MAX_OUTPUTS_PER_ROUND = 50
CONFIRM_TIMEOUT_S = 30.0
# Nodes refuse value transfers to addresses whose last trit is not zero.


def _valid_address(value: str) -> str:
    if not ternary.is_trytes(value) or len(value) not in (81, 90):
        raise ValueError("an address is 81 trytes (A-Z and 9), or 90 with checksum")
    if len(value) == 90 and not Address(value.encode()).is_checksum_valid():
        raise ValueError("the address checksum is invalid")
    if value[80] not in ternary.ZERO_LAST_TRIT:
        raise ValueError("not a Kerl address (its last trit must be 0): nodes refuse value to it")
    return value[:81]


class CreditIn(BaseModel):
    address: Annotated[str, AfterValidator(_valid_address)]
    value: int = Field(gt=0, le=ternary.SUPPLY)


class FaucetEmptyError(RuntimeError):
    pass


@dataclass
class _Request:
    address: str
    value: int
    answer: Future[dict[str, object]]


class FaucetMetrics:
    """What Prometheus scrapes at /metrics: credits by outcome, iota sent, the queue, the rest."""

    def __init__(self, queue_depth: queue.Queue[_Request]) -> None:
        self.registry = CollectorRegistry()
        self.credits = Counter(
            "devnet_faucet_credits",
            "Credits answered, by outcome (sent, failed: node down or refusing, empty)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("sent", "failed", "empty"):
            self.credits.labels(outcome)
        self.iota_sent = Counter(
            "devnet_faucet_iota_sent", "Iota sent in confirmed credits", registry=self.registry
        )
        self.round_seconds = Histogram(
            "devnet_faucet_round_seconds",
            "A round: sign, attach, wait for its confirmation",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.balance = Gauge(
            "devnet_faucet_balance_iota",
            "What the funded genesis address held at the last round",
            registry=self.registry,
        )
        queued = Gauge(
            "devnet_faucet_queue_depth", "Credits waiting for a round", registry=self.registry
        )
        queued.set_function(queue_depth.qsize)


class Faucet:
    def __init__(self, node_url: str, seed_file: Path, mwm: int) -> None:
        speedups.install()
        self.api = Iota(HttpAdapter(node_url, timeout=30))
        self.seed = Seed(seed_file.read_text().strip().encode())
        self.mwm = mwm
        self.state_file = seed_file.with_name("faucet.state")
        self.signed_file = seed_file.with_name("faucet.signed.json")
        self.queue: queue.Queue[_Request] = queue.Queue()
        self.metrics = FaucetMetrics(self.queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faucet", daemon=True)
        self._generator = AddressGenerator(self.seed, SECURITY_LEVEL)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def credit(self, address: str, value: int) -> Future[dict[str, object]]:
        request = _Request(address, value, Future())
        self.queue.put(request)
        return request.answer

    # -- the genesis address holding the funds ------------------------------------------
    def _address(self, index: int) -> Address:
        return self._generator.get_addresses(index, 1)[0]

    def _funded_index(self) -> tuple[int, int]:
        """The first genesis address from the saved index on that holds value and is unspent."""
        index = int(self.state_file.read_text()) if self.state_file.exists() else 0
        while not self._stop.is_set():
            address = self._address(index)
            balance = int(self.api.get_balances([address])["balances"][0])
            spent = bool(self.api.were_addresses_spent_from([address])["states"][0])
            if balance > 0 and not spent:
                self.state_file.write_text(f"{index}\n")
                return index, balance
            if balance > 0:  # spent, change not confirmed yet: a round was cut off
                time.sleep(0.5)
                continue
            index += 1
        raise RuntimeError("stopping")

    # -- rounds ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < MAX_OUTPUTS_PER_ROUND:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                with self.metrics.round_seconds.time():
                    self._round(batch)
            except Exception as exc:  # node down or refusing: tell the callers
                log.warning("faucet round of %d credits failed: %s", len(batch), exc)
                outcome = "empty" if isinstance(exc, FaucetEmptyError) else "failed"
                self.metrics.credits.labels(outcome).inc(len(batch))
                for r in batch:
                    if not r.answer.done():
                        r.answer.set_exception(exc)

    def _finish_signed(self) -> None:
        """A bundle signed by an earlier round that did not see it confirmed (node down, a
        crash): send exactly that bundle again until it confirms; never sign anew meanwhile."""
        if not self.signed_file.exists():
            return
        pending = json.loads(self.signed_file.read_text())
        trytes = [TransactionTrytes(t.encode()) for t in pending["trytes"]]
        self._send_until_confirmed(trytes)
        self.state_file.write_text(f"{int(pending['index']) + 1}\n")
        self.signed_file.unlink()
        log.info("faucet: the bundle signed with genesis address %d is confirmed", pending["index"])

    def _round(self, batch: list[_Request]) -> None:
        self._finish_signed()
        index, balance = self._funded_index()
        total = sum(r.value for r in batch)
        self.metrics.balance.set(balance)
        if total > balance:
            raise FaucetEmptyError(f"the faucet holds only {balance} iota")
        bundle = ProposedBundle(
            [
                ProposedTransaction(
                    address=Address(r.address.encode()), value=r.value, tag=FAUCET_TAG
                )
                for r in batch
            ]
        )
        source = self._address(index)
        source.balance = balance
        source.key_index = index
        source.security_level = SECURITY_LEVEL
        bundle.add_inputs([source])
        bundle.send_unspent_inputs_to(self._address(index + 1))
        bundle.finalize()
        bundle.sign_inputs(KeyGenerator(self.seed))
        trytes = bundle.as_tryte_strings()
        # Kept before it leaves: this key has signed, whatever happens to the round.
        self.signed_file.write_text(
            json.dumps({"index": index, "trytes": [str(t) for t in trytes]})
        )
        tail = self._send_until_confirmed(trytes)
        self.state_file.write_text(f"{index + 1}\n")
        self.signed_file.unlink()
        balances = self.api.get_balances([Address(r.address.encode()) for r in batch])["balances"]
        milestone = int(self.api.get_node_info()["latestSolidSubtangleMilestoneIndex"])
        for r, b in zip(batch, balances, strict=True):
            r.answer.set_result(
                {
                    "address": r.address,
                    "value": r.value,
                    "balance": int(b),
                    "bundle": str(bundle.hash),
                    "transaction": tail,
                    "milestoneIndex": milestone,
                }
            )
        self.metrics.credits.labels("sent").inc(len(batch))
        self.metrics.iota_sent.inc(total)
        self.metrics.balance.set(balance - total)
        log.info("faucet: %d credits, %d iota, bundle %s confirmed", len(batch), total, bundle.hash)

    def _send_until_confirmed(self, trytes: list[TransactionTrytes]) -> str:
        """Attach the signed bundle (again, if a milestone does not take it) until one of its
        attachments is confirmed; returns that attachment's tail."""
        bundle_hash = Transaction.from_tryte_string(trytes[0]).bundle_hash
        while True:
            tail = self._confirmed_tail(bundle_hash)
            if tail is not None:  # an earlier attachment made it (before a crash, say)
                return tail
            self.api.send_trytes(trytes, depth=3, min_weight_magnitude=self.mwm)
            deadline = time.monotonic() + CONFIRM_TIMEOUT_S
            while time.monotonic() < deadline:
                tail = self._confirmed_tail(bundle_hash)
                if tail is not None:
                    return tail
                time.sleep(0.1)
            log.warning("faucet bundle not confirmed after %.0f s: reattaching", CONFIRM_TIMEOUT_S)

    def _confirmed_tail(self, bundle_hash: BundleHash) -> str | None:
        """The tail of a confirmed attachment of the bundle, if any."""
        hashes = self.api.find_transactions(bundles=[bundle_hash])["hashes"]
        if not hashes:
            return None
        txs = [
            Transaction.from_tryte_string(t, hash_=h)
            for h, t in zip(hashes, self.api.get_trytes(hashes)["trytes"], strict=True)
        ]
        tails = [tx.hash for tx in txs if tx.current_index == 0]
        if not tails:
            return None
        states = self.api.get_latest_inclusion(tails)["states"]
        return next((str(h) for h, ok in states.items() if ok), None)


def create_app(faucet: Faucet) -> FastAPI:
    app = FastAPI(title="devnet faucet", summary="Real transfers from the devnet's genesis seed")

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: object, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, 400)

    @app.post("/faucet", summary="Send `value` iota to `address`; answers once confirmed")
    def credit(body: CreditIn) -> JSONResponse:
        try:
            return JSONResponse(faucet.credit(body.address, body.value).result(timeout=120))
        except FaucetEmptyError as exc:
            return JSONResponse({"detail": str(exc)}, 400)
        except Exception as exc:
            return JSONResponse({"detail": f"the node did not take the transfer: {exc}"}, 503)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(faucet.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
