"""The buyer's side of a payment, with PyOTA against any IRI-API node (the devnet included).

Reusable by tests and benchmarks:

    from wallet.payments import fund_from_faucet, pay, wait_confirmed
    fund_from_faucet(faucet_url, node_url, seed, 1000)  # devnet only
    result = pay(node_url, seed, address, tag, 10)      # PaymentResult(bundle_hash, tail_hash, ...)
    wait_confirmed(node_url, result.tail_hash)

Address generation is the slow part of PyOTA (~0.4 s per address, pure Python), so the wallet
scans the seed's addresses once per call and hands `send_transfer` its inputs and change
address instead of letting PyOTA scan them again. Security level 2, as PyOTA's default.
Legacy IOTA signatures (W-OTS) are one-time: an address that signed once must never sign
again, and must not receive either (IOTA wallets refuse to pay it). An address counts as spent
when the node says so (`wereAddressesSpentFrom`) or when the tangle holds any outgoing
transaction of it, confirmed or not, so a pending spend is never signed a second time. `pay`
refuses to send to a spent address.

The node's minimum weight magnitude is configuration: `min_weight_magnitude=`, else $IOTA_MWM,
else what the node reports (IRI's getNodeAPIConfiguration; Hornet does not), else 14.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TypeAlias

from iota import (
    Address,
    Iota,
    ProposedTransaction,
    Tag,
    Transaction,
    TransactionHash,
    TryteString,
)
from iota.crypto.addresses import AddressGenerator
from iota.crypto.types import Seed

from broker_auth.ledger import speedups, ternary

SECURITY_LEVEL = 2
DEPTH = 3
DEFAULT_MWM = 14  # IRI mainnet's, used when a node hides getNodeAPIConfiguration
HTTP_TIMEOUT_S = 60.0
_UNSAFE_TAG_CYCLE = 100_000  # finalize needs ~100 attempts on average; give it a wide margin

SeedLike: TypeAlias = Seed | str


class WalletError(RuntimeError):
    """Something the user can act on (bad input, not enough funds, node refused)."""


class InsufficientFundsError(WalletError):
    pass


class SpentAddressError(WalletError):
    """The receiving address has signed before (W-OTS keys are one-time)."""


@dataclass(frozen=True)
class PaymentResult:
    bundle_hash: str
    tail_hash: str
    address: str
    tag: str
    amount: int
    transaction_hashes: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class FaucetCredit:
    address: str
    value: int
    balance: int
    bundle_hash: str
    tail_hash: str


@dataclass(frozen=True)
class SeedState:
    """What one scan of a seed's addresses found."""

    used: tuple[Address, ...]  # addresses with transactions, in index order
    next_unused: Address  # first address without any transaction
    balances: tuple[int, ...]  # confirmed balance of each used address
    spent: tuple[bool, ...]  # whether each used address was spent from

    @property
    def total(self) -> int:
        return sum(self.balances)

    @property
    def spendable(self) -> int:
        return sum(b for b, s in zip(self.balances, self.spent, strict=True) if not s)


def _seed(seed: SeedLike) -> Seed:
    text = str(seed)
    if len(text) != 81 or any(c not in ternary.ALPHABET for c in text):
        raise WalletError("a seed is 81 trytes (A-Z and 9)")
    return Seed(text.encode())


def parse_address(address: str) -> Address:
    address = address.strip()
    if len(address) not in (81, 90) or any(c not in ternary.ALPHABET for c in address):
        raise WalletError("an address is 81 trytes (A-Z and 9), or 90 with checksum")
    if len(address) == 90 and not Address(address.encode()).is_checksum_valid():
        raise WalletError("the address checksum is invalid")
    return Address(address[:81].encode())


def _tag(tag: str) -> Tag:
    tag = tag.strip()
    if len(tag) > 27 or any(c not in ternary.ALPHABET for c in tag):
        raise WalletError("a tag is up to 27 trytes (A-Z and 9)")
    # PyOTA 2.1.0 makes the bundle hash "secure" by incrementing the tail's obsolete tag, which
    # starts as the tag; counting up from a small negative value reaches all-9s, where it falls
    # back to the tag again: an endless loop in send_transfer (e.g. tag "X").
    if -_UNSAFE_TAG_CYCLE < ternary.to_int(tag) < 0:
        raise WalletError(f"tag {tag!r} would make PyOTA loop forever; use a longer tag")
    return Tag(tag.encode())


def _api(node_url: str, seed: SeedLike | None = None) -> Iota:
    # PyOTA's pure-Python trit conversions dominate a payment; same results, several x faster.
    speedups.install()
    return Iota(node_url, _seed(seed) if seed is not None else None)


def node_min_weight_magnitude(node_url: str) -> int:
    """$IOTA_MWM, else the node's (getNodeAPIConfiguration), else IRI's mainnet 14."""
    configured = os.environ.get("IOTA_MWM", "").strip()
    if configured:
        try:
            return int(configured)
        except ValueError:
            raise WalletError(f"IOTA_MWM must be a number, not {configured!r}") from None
    try:
        answer = _api(node_url).get_node_api_configuration()
    except Exception:  # nodes may not expose it (IRI's remote-limit-api)
        return DEFAULT_MWM
    return int(answer.get("minWeightMagnitude", DEFAULT_MWM))


def scan_seed(node_url: str, seed: SeedLike) -> SeedState:
    """Walk the seed's addresses from index 0 until the first one without transactions."""
    api = _api(node_url, seed)
    used: list[Address] = []
    for address in AddressGenerator(_seed(seed), SECURITY_LEVEL).create_iterator(start=0):
        if not api.find_transactions(addresses=[address])["hashes"]:
            next_unused = address
            break
        used.append(address)
    balances: list[int] = []
    spent: list[bool] = []
    if used:
        balances = [int(b) for b in api.get_balances(used)["balances"]]
        spent = were_spent(node_url, used)
    return SeedState(tuple(used), next_unused, tuple(balances), tuple(spent))


def were_spent(node_url: str, addresses: list[Address]) -> list[bool]:
    """Spent per the node's ledger, or with any outgoing transaction on the tangle (pending)."""
    api = _api(node_url)
    spent = [bool(s) for s in api.were_addresses_spent_from(addresses)["states"]]
    unknown = [a for a, s in zip(addresses, spent, strict=True) if not s]
    if unknown:
        hashes = api.find_transactions(addresses=unknown)["hashes"]
        outgoing: set[str] = set()
        for start in range(0, len(hashes), 500):
            for trytes in api.get_trytes(hashes[start : start + 500])["trytes"]:
                tx = Transaction.from_tryte_string(trytes)
                if tx.value < 0:
                    outgoing.add(str(tx.address))
        spent = [s or str(a) in outgoing for a, s in zip(addresses, spent, strict=True)]
    return spent


def next_address(node_url: str, seed: SeedLike) -> str:
    """The seed's first address without transactions: where to receive next."""
    return str(scan_seed(node_url, seed).next_unused)


def balance(node_url: str, seed: SeedLike) -> int:
    """Confirmed balance over all of the seed's used addresses."""
    return scan_seed(node_url, seed).total


def post_json(
    url: str, body: dict[str, object], timeout: float = HTTP_TIMEOUT_S
) -> dict[str, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    return _answer(request, url, timeout)


def get_json(url: str, timeout: float = HTTP_TIMEOUT_S) -> dict[str, object]:
    return _answer(urllib.request.Request(url), url, timeout)


def _answer(request: urllib.request.Request, url: str, timeout: float) -> dict[str, object]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: dict[str, object] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise WalletError(f"{url} answered {exc.code}: {detail}") from None
    except OSError as exc:
        raise WalletError(f"cannot reach {url}: {exc}") from None
    return answer


def fund_from_faucet(faucet_url: str, node_url: str, seed: SeedLike, value: int) -> FaucetCredit:
    """Devnet only: credit `value` confirmed iota to the seed's next unused address."""
    if value <= 0:
        raise WalletError("the faucet value must be > 0")
    address = next_address(node_url, seed)
    answer = post_json(
        faucet_url.rstrip("/") + "/faucet", {"address": address, "value": value}, HTTP_TIMEOUT_S
    )
    return FaucetCredit(
        address=str(answer["address"]),
        value=int(str(answer["value"])),
        balance=int(str(answer["balance"])),
        bundle_hash=str(answer.get("bundle", "")),
        tail_hash=str(answer.get("transaction", "")),
    )


def pay(
    node_url: str,
    seed: SeedLike,
    address: str,
    tag: str,
    amount: int,
    *,
    min_weight_magnitude: int | None = None,
    depth: int = DEPTH,
    message: str | None = None,
) -> PaymentResult:
    """Send `amount` iota to `address` with `tag` from the seed's confirmed, unspent funds;
    `message` (trytes, at most one transaction's 2187) goes in the value transaction.

    Change goes to the seed's next unused address. Raises InsufficientFundsError when the
    confirmed funds do not cover the amount (e.g. change of an earlier payment is unconfirmed).
    """
    started = time.monotonic()
    if amount < 0:
        raise WalletError("the amount must be >= 0")
    if message is not None and (
        len(message) > 2187 or any(c not in ternary.ALPHABET for c in message)
    ):
        raise WalletError("the message must be at most 2187 trytes (one transaction)")
    receiver = parse_address(address)
    payment_tag = _tag(tag)
    mwm = min_weight_magnitude or node_min_weight_magnitude(node_url)
    if were_spent(node_url, [receiver])[0]:
        raise SpentAddressError(
            f"{receiver} was spent from: its key is used up and value sent there is at risk;"
            " ask the seller for a fresh address"
        )
    inputs: list[Address] = []
    change: Address | None = None
    if amount > 0:
        state = scan_seed(node_url, seed)
        covered = 0
        for addy, value, spent in zip(state.used, state.balances, state.spent, strict=True):
            if value > 0 and not spent and covered < amount:
                addy.balance = value
                inputs.append(addy)
                covered += value
        if covered < amount:
            raise InsufficientFundsError(
                f"confirmed unspent funds are {state.spendable} iota (total confirmed"
                f" {state.total}), {amount} needed; wait for pending transfers to confirm"
            )
        change = state.next_unused
    api = _api(node_url, seed)
    try:
        answer = api.send_transfer(
            transfers=[
                ProposedTransaction(
                    address=receiver,
                    value=amount,
                    tag=payment_tag,
                    message=TryteString(message) if message else None,
                )
            ],
            inputs=inputs or None,
            change_address=change,
            depth=depth,
            min_weight_magnitude=mwm,
            security_level=SECURITY_LEVEL,
        )
    except ValueError as exc:  # PyOTA's BadApiResponse and filter errors
        raise WalletError(f"the node refused the transfer: {exc}") from None
    bundle = answer["bundle"]
    return PaymentResult(
        bundle_hash=str(bundle.hash),
        tail_hash=str(bundle.tail_transaction.hash),
        address=str(receiver),
        tag=str(payment_tag),
        amount=amount,
        transaction_hashes=tuple(str(tx.hash) for tx in bundle),
        seconds=time.monotonic() - started,
    )


def is_confirmed(node_url: str, tail_hash: str) -> bool:
    states = _api(node_url).get_latest_inclusion([TransactionHash(tail_hash.encode())])
    return bool(next(iter(states["states"].values())))


def wait_confirmed(
    node_url: str, tail_hash: str, timeout: float = 30.0, interval: float = 0.1
) -> float:
    """Poll get_latest_inclusion until the transaction is confirmed; return the seconds waited."""
    started = time.monotonic()
    while not is_confirmed(node_url, tail_hash):
        if time.monotonic() - started > timeout:
            raise WalletError(f"transaction {tail_hash} not confirmed after {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started


def fetch_order(
    api_url: str, order_id: str, username: str, password: str, timeout: float = 10.0
) -> dict[str, object]:
    """GET /api/orders/{id} of broker_auth with HTTP Basic (the buyer's own order)."""
    url = f"{api_url.rstrip('/')}/api/orders/{urllib.parse.quote(order_id, safe='')}"
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            order: dict[str, object] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise WalletError(f"order {order_id}: {url} answered {exc.code}: {detail}") from None
    except OSError as exc:
        raise WalletError(f"cannot reach {url}: {exc}") from None
    for key in ("address", "tag", "amount_iota"):
        if key not in order:
            raise WalletError(f"order {order_id}: the answer has no {key!r}")
    return order
