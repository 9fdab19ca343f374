"""The seller's side: deposit addresses derived offline, and the sweep of closed ones.

    derive_addresses(seed, start=0, count=1000)        # offline; feed them to broker_auth
    sweep(node_url, seed, api_url, admin_token, to)    # spend closed addresses to `to`

broker_auth never holds a seed: it hands out the addresses, watches them while an order holds
them, and then closes them. `sweep` asks it (admin API) which addresses are closed, spends only
those that hold value and never signed before (one bundle per `MAX_INPUTS_PER_BUNDLE`), sends
everything to the one address given, waits for confirmation and tells broker_auth which
addresses are swept, so they are never handed out again. Key indexes are found by deriving
the seed's addresses in order; `<seed file>.index` keeps what was derived (addresses only).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iota import Address, Iota, ProposedBundle, ProposedTransaction, Tag, Transaction
from iota.crypto.addresses import AddressGenerator
from iota.crypto.signing import KeyGenerator
from iota.crypto.types import Seed

from broker_auth.ledger import speedups
from wallet import payments

SECURITY_LEVEL = payments.SECURITY_LEVEL
MAX_INPUTS_PER_BUNDLE = 40
SWEEP_TAG = Tag(b"IOT9SWEEP")
PAGE = 1000


@dataclass(frozen=True)
class SweepResult:
    swept: tuple[str, ...]  # closed addresses marked swept (value moved, or none to move)
    value: int
    bundles: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (address, why) left closed


class IndexCache:
    """Addresses of one seed in index order, derived once (`<seed file>.index`, not secret)."""

    def __init__(self, seed: Seed, path: Path | None) -> None:
        speedups.install()
        self.seed = seed
        self.path = path
        self.addresses: list[str] = []
        if path is not None and path.exists():
            self.addresses = [x for x in path.read_text().split() if x]

    def derive(self, count: int) -> list[str]:
        if len(self.addresses) < count:
            start = len(self.addresses)
            new = AddressGenerator(self.seed, SECURITY_LEVEL).get_addresses(start, count - start)
            self.addresses += [str(a) for a in new]
            if self.path is not None:
                self.path.write_text("\n".join(self.addresses) + "\n")
        return self.addresses[:count]

    def index_of(self, wanted: set[str], max_index: int) -> dict[str, int]:
        found: dict[str, int] = {}
        size = 0
        while size < max_index and len(found) < len(wanted):
            size = min(max_index, max(size * 2, 64))
            found = {a: i for i, a in enumerate(self.derive(size)) if a in wanted}
        return found


def derive_addresses(seed: str, start: int, count: int, cache: Path | None = None) -> list[str]:
    """The seed's addresses `start`..`start+count-1` (security level 2), offline."""
    if start < 0 or count < 1:
        raise payments.WalletError("--start must be >= 0 and --count >= 1")
    return IndexCache(Seed(seed.encode()), cache).derive(start + count)[start:]


def _admin(api_url: str, token: str, method: str, path: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        api_url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise payments.WalletError(f"broker_auth answered {exc.code} to {path}: {detail}") from None
    except OSError as exc:
        raise payments.WalletError(f"cannot reach broker_auth at {api_url}: {exc}") from None
    return json.loads(raw) if raw else None


def closed_addresses(api_url: str, token: str) -> list[str]:
    found: list[str] = []
    offset = 0
    while True:
        query = urllib.parse.urlencode({"state": "closed", "limit": PAGE, "offset": offset})
        answer = _admin(api_url, token, "GET", f"/api/deposit-addresses?{query}")
        assert isinstance(answer, dict)
        page = [str(a["address"]) for a in answer["addresses"]]
        found += page
        if len(page) < PAGE:
            return found
        offset += PAGE


def _chunks(items: list[Address], size: int) -> Iterator[list[Address]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sweep(
    node_url: str,
    seed: str,
    api_url: str,
    admin_token: str,
    to: str,
    *,
    index_cache: Path | None = None,
    max_index: int = 100_000,
    mwm: int | None = None,
    timeout_s: float = 120.0,
) -> SweepResult:
    receiver = payments.parse_address(to)
    closed = closed_addresses(api_url, admin_token)
    if str(receiver) in closed:
        raise payments.WalletError("--to is one of the addresses being swept")
    if payments.were_spent(node_url, [receiver])[0]:
        raise payments.SpentAddressError(f"{receiver} was spent from: choose a fresh address")
    if not closed:
        return SweepResult((), 0, (), ())
    the_seed = Seed(seed.encode())
    indexes = IndexCache(the_seed, index_cache).index_of(set(closed), max_index)
    skipped = [(a, "not an address of this seed") for a in closed if a not in indexes]
    mine = [Address(a.encode()) for a in closed if a in indexes]
    api = Iota(node_url)
    balances = [int(b) for b in api.get_balances(mine)["balances"]] if mine else []
    spent = payments.were_spent(node_url, mine) if mine else []
    inputs: list[Address] = []
    empty: list[str] = []
    for address, value, was_spent in zip(mine, balances, spent, strict=True):
        if value == 0:  # nothing (left) to move, also after an earlier sweep's bundle
            empty.append(str(address))
        elif was_spent:
            skipped.append(
                (str(address), "signed before and still holds value: never signed twice")
            )
        else:
            address.balance = value
            address.key_index = indexes[str(address)]
            address.security_level = SECURITY_LEVEL
            inputs.append(address)
    weight = mwm or payments.node_min_weight_magnitude(node_url)
    swept: list[str] = []
    bundles: list[str] = []
    total = 0
    for start in range(0, len(empty), PAGE):  # nothing to move: retire them all the same
        body = {"addresses": empty[start : start + PAGE], "bundle": "9" * 81}
        _admin(api_url, admin_token, "POST", "/api/deposit-addresses/swept", body)
    swept += empty
    for group in _chunks(inputs, MAX_INPUTS_PER_BUNDLE):
        value = sum(int(a.balance or 0) for a in group)
        bundle = ProposedBundle([ProposedTransaction(address=receiver, value=value, tag=SWEEP_TAG)])
        bundle.add_inputs(group)
        bundle.finalize()
        bundle.sign_inputs(KeyGenerator(the_seed))
        attached = api.send_trytes(bundle.as_tryte_strings(), depth=3, min_weight_magnitude=weight)
        tail = next(
            t.hash
            for t in (Transaction.from_tryte_string(x) for x in attached["trytes"])
            if t.current_index == 0
        )
        payments.wait_confirmed(node_url, str(tail), timeout=timeout_s)
        group_addresses = [str(a) for a in group]
        body = {"addresses": group_addresses, "bundle": str(bundle.hash)}
        _admin(api_url, admin_token, "POST", "/api/deposit-addresses/swept", body)
        swept += group_addresses
        bundles.append(str(bundle.hash))
        total += value
    return SweepResult(tuple(swept), total, tuple(bundles), tuple(skipped))
