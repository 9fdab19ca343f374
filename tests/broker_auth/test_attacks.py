"""Attacks on the payment path, each against real Hornet and a real broker_auth.

What counts is the value the node's ledger confirms on the order's own address. Every test
here first makes the attack happen on the tangle (the forged transaction is stored, the
re-tagged copy is attached first, both halves of the double spend are broadcast) and then
checks what broker_auth credited.

Products: `slow` (3600 iota/h: 1 iota buys 1 s) on live/plug-1/#. Windows are short
(ORDER_PAYMENT_WINDOW_S 8 s, LATE_PAYMENT_WINDOW_S 8 s) so closing can be seen.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from iota import (
    Address,
    Fragment,
    Iota,
    Nonce,
    ProposedTransaction,
    Tag,
    Transaction,
    TransactionHash,
    TransactionTrytes,
)
from iota.crypto.types import Seed

from testing import procs
from testing.addresses import random_address
from testing.broker_auth import AuthStack, get_order, place_order, start_auth_stack
from testing.procs import wait_for
from tests.attacker_pow import do_pow
from tests.broker_auth.conftest import AuthStackFactory
from tests.conftest import Mongo, MosquittoFactory
from tests.devnet_fixture import TEST_MWM, start_devnet
from wallet import payments
from wallet.payments import SeedState

PRICE = 3600
PASSWORD = "attack-password-1"
WINDOW_S = 8.0
POLL_PAUSE_S = 2.5  # several watcher polls and milestones


def seconds_left(expires_at: str) -> float:
    end = dt.datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    return end - time.time()


@dataclass
class Arena:
    net: procs.Devnet
    stack: AuthStack

    @property
    def api(self) -> Iota:
        return Iota(self.net.url)

    def http(self) -> httpx.Client:
        return self.stack.http()

    def buyer(self, prefix: str) -> tuple[str, str]:
        username = f"{prefix}-{secrets.token_hex(3)}"
        self.stack.register(username, PASSWORD)
        return username, PASSWORD

    def order(self, auth: tuple[str, str], hours: float = 0.01) -> dict[str, Any]:
        return place_order(self.stack.api_url, *auth, "slow", hours)

    def get_order(self, auth: tuple[str, str], order_id: str) -> dict[str, Any]:
        return get_order(self.stack.api_url, *auth, order_id)

    def wait_confirmed(self, auth: tuple[str, str], order_id: str, iota: int) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            o = self.get_order(auth, order_id)
            return o if o["confirmed_iota"] >= iota else None

        found: dict[str, Any] = wait_for(check, 30, f"{iota} iota confirmed on {order_id}", 0.1)
        return found

    def payments(self) -> list[dict[str, Any]]:
        r = self.http().get("/api/payments", headers=self.stack.admin)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        return found

    def payments_to(self, address: str) -> list[dict[str, Any]]:
        return [p for p in self.payments() if p["address"] == address]

    def funded_seed(self, value: int) -> Seed:
        seed = Seed.random()
        payments.fund_from_faucet(self.net.faucet_url, self.net.url, seed, value)
        return seed

    def signed_transfer(
        self, seed: Seed, outputs: list[tuple[str, int, str]]
    ) -> list[TransactionTrytes]:
        """A signed bundle spending the seed's funded address, not sent (PyOTA directly)."""
        state, inputs = self.funded_inputs(seed)
        transfers = [
            ProposedTransaction(address=Address(a.encode()), value=v, tag=Tag(t.encode()))
            for a, v, t in outputs
        ]
        trytes: list[TransactionTrytes] = Iota(self.net.url, seed).prepare_transfer(
            transfers=transfers,
            inputs=inputs,
            change_address=state.next_unused,
            security_level=payments.SECURITY_LEVEL,
        )["trytes"]
        return trytes

    def funded_inputs(self, seed: Seed) -> tuple[SeedState, list[Address]]:
        """The seed's state and its funded address (key index 0) ready to sign with."""
        state = payments.scan_seed(self.net.url, seed)
        inputs = []
        for address, balance in zip(state.used, state.balances, strict=True):
            if balance > 0:
                address.balance = balance
                address.key_index = 0
                address.security_level = payments.SECURITY_LEVEL
                inputs.append(address)
        return state, inputs

    def send(self, trytes: list[TransactionTrytes]) -> list[Transaction]:
        return [Transaction.from_tryte_string(t) for t in self.attach(trytes)]

    def attach(self, trytes: list[TransactionTrytes]) -> list[TransactionTrytes]:
        """Attach and store a bundle; its transactions' trytes, not parsed.

        One broadcastTransactions call: Hornet 0.5.6's storeTransactions is the same call
        again (PyOTA's send_trytes makes both), and each takes ~0.2 s on a busy 2-core node."""
        tips = self.api.get_transactions_to_approve(depth=3)
        attached: list[TransactionTrytes] = self.api.attach_to_tangle(
            tips["trunkTransaction"], tips["branchTransaction"], trytes, TEST_MWM
        )["trytes"]
        self.api.broadcast_transactions(attached)
        return attached

    def attach_single(self, tx: Transaction) -> Transaction:
        """Store one transaction with the attacker's own PoW (no bundle is checked for that)."""
        tips = self.api.get_transactions_to_approve(depth=3)
        tx.trunk_transaction_hash = tips["trunkTransaction"]
        tx.branch_transaction_hash = tips["branchTransaction"]
        tx.attachment_timestamp = int(time.time() * 1000)
        tx.attachment_timestamp_upper_bound = (3**27 - 1) // 2
        trytes, _ = do_pow(str(tx.as_tryte_string()), TEST_MWM)
        self.api.broadcast_and_store([TransactionTrytes(trytes.encode())])
        return Transaction.from_tryte_string(trytes)

    def stored(self, tx_hash: TransactionHash) -> bool:
        (trytes,) = self.api.get_trytes([tx_hash])["trytes"]
        return bool(str(trytes).strip("9"))


@pytest.fixture(scope="module")
def arena(
    auth_stack_factory: AuthStackFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Arena]:
    net = start_devnet(tmp_path_factory.mktemp("attacks-devnet"), crash_safe=True)
    try:
        stack = auth_stack_factory(
            "attacks",
            node_url=net.url,
            ORDER_PAYMENT_WINDOW_S=str(WINDOW_S),
            LATE_PAYMENT_WINDOW_S=str(WINDOW_S),
            UNPAID_HOLD_S=str(WINDOW_S),
            STRAY_SCAN_INTERVAL_S="1",
        )
        wait_for(lambda: (stack.health() or {}).get("status") == "ok", 30, "healthz ok")
        stack.create_product("slow", "live/plug-1/#", PRICE)
        yield Arena(net, stack)
    finally:
        net.stop()


def test_forged_unsigned_output_beside_a_real_payment_counts_nothing(arena: Arena) -> None:
    buyer = arena.buyer("forger")
    order = arena.order(buyer)  # 36 iota
    seed = arena.funded_seed(5)
    real = arena.send(arena.signed_transfer(seed, [(order["address"], 5, order["tag"])]))
    tail = next(t for t in real if t.current_index == 0)
    # One more "output" of the same bundle: same bundle hash, address and tag, index 7 of 7,
    # no signature. Its PoW is valid, so the node stores it.
    forged = Transaction(
        hash_=None,
        signature_message_fragment=Fragment(b""),
        address=Address(order["address"].encode()),
        value=1_000_000,
        timestamp=tail.timestamp,
        current_index=7,
        last_index=7,
        bundle_hash=tail.bundle_hash,
        trunk_transaction_hash=tail.trunk_transaction_hash,
        branch_transaction_hash=tail.branch_transaction_hash,
        tag=tail.tag,
        attachment_timestamp=0,
        attachment_timestamp_lower_bound=0,
        attachment_timestamp_upper_bound=0,
        nonce=Nonce(b""),
        legacy_tag=tail.legacy_tag,
    )
    stored = arena.attach_single(forged)
    assert arena.stored(stored.hash), "the node did not store the forged transaction"
    done = arena.wait_confirmed(buyer, order["order_id"], 5)
    time.sleep(POLL_PAUSE_S)
    done = arena.get_order(buyer, order["order_id"])
    assert done["confirmed_iota"] == 5 and done["paid_iota"] == 5
    (payment,) = arena.payments_to(order["address"])
    assert payment["amount_iota"] == 5 and payment["bundles"] == [str(tail.bundle_hash)]
    (grant,) = arena.http().get("/api/grants", auth=buyer).json()
    left = seconds_left(grant["expires_at"])
    assert left < 6, f"{left:.0f} s of access for 5 iota"


def test_retagged_bundle_attached_first_credits_the_payer_only(arena: Arena) -> None:
    payer = arena.buyer("payer")
    thief = arena.buyer("thief")
    paid = arena.order(payer)
    stolen = arena.order(thief)
    seed = arena.funded_seed(36)
    original = arena.signed_transfer(seed, [(paid["address"], 36, paid["tag"])])
    # The thief copies the bundle before it confirms, puts her order's tag on every
    # transaction (the tag is outside the bundle hash: the bundle stays valid) and attaches it
    # first; the payer's own attachment follows.
    retagged = []
    for trytes in original:
        tx = Transaction.from_tryte_string(trytes)
        tx.tag = Tag(stolen["tag"].encode())
        retagged.append(tx.as_tryte_string())
    arena.send(retagged)
    arena.send(original)
    arena.wait_confirmed(payer, paid["order_id"], 36)
    time.sleep(POLL_PAUSE_S)
    assert arena.get_order(payer, paid["order_id"])["confirmed_iota"] == 36
    robbed = arena.get_order(thief, stolen["order_id"])
    assert robbed["confirmed_iota"] == robbed["paid_iota"] == 0
    assert arena.payments_to(stolen["address"]) == []
    assert arena.http().get("/api/grants", auth=thief).json() == []


def test_reattached_and_promoted_bundle_counts_once(arena: Arena) -> None:
    buyer = arena.buyer("replay")
    order = arena.order(buyer, 0.02)  # 72 iota
    seed = arena.funded_seed(72)
    result = payments.pay(arena.net.url, seed, order["address"], order["tag"], 72)
    tail = TransactionHash(result.tail_hash.encode())
    arena.api.replay_bundle(tail, depth=3, min_weight_magnitude=TEST_MWM)
    arena.api.promote_transaction(tail, depth=3, min_weight_magnitude=TEST_MWM)
    arena.wait_confirmed(buyer, order["order_id"], 72)
    time.sleep(POLL_PAUSE_S)
    assert arena.get_order(buyer, order["order_id"])["confirmed_iota"] == 72
    (payment,) = arena.payments_to(order["address"])
    assert payment["amount_iota"] == 72 and payment["bundles"] == [result.bundle_hash]


def test_double_spend_credits_only_what_the_ledger_kept(arena: Arena) -> None:
    buyer = arena.buyer("double")
    first, second = arena.order(buyer), arena.order(buyer)
    seed = arena.funded_seed(36)
    # Two bundles spending the same 36 iota, one to each order, broadcast together.
    one = arena.signed_transfer(seed, [(first["address"], 36, first["tag"])])
    two = arena.signed_transfer(seed, [(second["address"], 36, second["tag"])])
    arena.send(one)
    arena.send(two)

    def settled() -> bool:
        total = sum(
            arena.get_order(buyer, o["order_id"])["confirmed_iota"] for o in (first, second)
        )
        return bool(total > 0)

    wait_for(settled, 30, "one of the two to confirm", 0.2)
    time.sleep(POLL_PAUSE_S * 2)
    credited = [arena.get_order(buyer, o["order_id"])["confirmed_iota"] for o in (first, second)]
    assert sorted(credited) == [0, 36], credited
    balances = arena.api.get_balances([Address(o["address"].encode()) for o in (first, second)])
    assert sorted(int(b) for b in balances["balances"]) == [0, 36]


def test_zero_value_spam_and_stray_value_on_a_watched_address(arena: Arena) -> None:
    buyer = arena.buyer("spammed")
    order = arena.order(buyer)
    address = Address(order["address"].encode())
    sent: list[str] = []

    def spam() -> None:  # 30 zero-value bundles on the watched address
        for _ in range(30):
            tx = ProposedTransaction(address=address, value=0, tag=Tag(b"SPAM"))
            arena.api.send_transfer([tx], depth=3, min_weight_magnitude=TEST_MWM)
            sent.append("spam")

    # The spam goes on while the real value arrives: the value must land inside the order's
    # short watch window, however long 30 proofs of work take on a loaded machine.
    spammer = threading.Thread(target=spam, daemon=True)
    spammer.start()
    wait_for(lambda: len(sent) >= 3, 60, "spam on the tangle", 0.05)
    time.sleep(1.0)  # four watcher polls
    o = arena.get_order(buyer, order["order_id"])
    assert o["confirmed_iota"] == 0 and o["paid_iota"] == 0 and o["status"] != "confirmed"
    assert (arena.stack.health() or {}).get("node") == "ok"
    # Value from anyone (here the faucet, no tag of the order) is value on the order's address.
    r = httpx.post(
        f"{arena.net.faucet_url}/faucet",
        json={"address": order["address"], "value": 36},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert arena.wait_confirmed(buyer, order["order_id"], 36)["confirmed_iota"] == 36
    spammer.join(180)
    assert len(sent) == 30
    time.sleep(POLL_PAUSE_S)
    o = arena.get_order(buyer, order["order_id"])
    assert o["confirmed_iota"] == 36 and o["paid_iota"] == 36, o
    assert (arena.stack.health() or {}).get("node") == "ok"


def test_payment_after_expiry_counts_and_after_the_watch_window_is_unmatched(
    arena: Arena,
) -> None:
    buyer = arena.buyer("late")
    late, later = arena.order(buyer), arena.order(buyer)
    wait_for(
        lambda: arena.get_order(buyer, late["order_id"])["status"] == "expired",
        WINDOW_S + 5,
        "the order to expire",
    )
    seed = arena.funded_seed(36)
    payments.pay(arena.net.url, seed, late["address"], late["tag"], 36)
    assert arena.wait_confirmed(buyer, late["order_id"], 36)["confirmed_iota"] == 36
    # `later` was never paid: its address goes back to the free queue after expires_at +
    # UNPAID_HOLD_S; value sent to it then is no payment of that order.
    wait_for(
        lambda: (
            later["address"] in {a["address"] for a in arena.stack.pool_state("free")["addresses"]}
        ),
        2 * WINDOW_S + 10,
        "the address to be free again",
    )
    seed2 = arena.funded_seed(20)
    result = payments.pay(arena.net.url, seed2, later["address"], later["tag"], 20)
    (payment,) = wait_for(lambda: arena.payments_to(later["address"]), 30, "unmatched record")
    assert payment["matched"] is False and payment["order_id"] is None
    assert payment["amount_iota"] == 20 and payment["bundles"] == [result.bundle_hash]
    assert arena.get_order(buyer, later["order_id"])["confirmed_iota"] == 0


def test_partial_then_topped_up_payments_on_one_order_stack(arena: Arena) -> None:
    buyer = arena.buyer("topup")
    order = arena.order(buyer)  # 36 iota
    seed = arena.funded_seed(100)
    payments.pay(arena.net.url, seed, order["address"], order["tag"], 20)
    arena.wait_confirmed(buyer, order["order_id"], 20)
    (grant,) = arena.http().get("/api/grants", auth=buyer).json()
    first_end = dt.datetime.fromisoformat(grant["expires_at"].replace("Z", "+00:00"))
    payments.pay(arena.net.url, seed, order["address"], order["tag"], 30)
    done = arena.wait_confirmed(buyer, order["order_id"], 50)
    assert done["confirmed_iota"] == 50 and done["status"] == "confirmed"
    steps = sorted(
        (int(p["payment_id"].rsplit(":", 1)[1]), p["amount_iota"])
        for p in arena.payments_to(order["address"])
    )
    assert steps == [(0, 20), (20, 30)]  # each confirmed increase once, from where it started
    (grant,) = arena.http().get("/api/grants", auth=buyer).json()
    # The top-up stacks onto the running grant's end (compared as instants: the seconds left
    # would also shrink by however long the second payment took to confirm).
    end = dt.datetime.fromisoformat(grant["expires_at"].replace("Z", "+00:00"))
    assert (end - first_end).total_seconds() == pytest.approx(30, abs=1)


def test_orders_never_share_an_address_under_concurrency(
    arena: Arena,
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    ferret: Mongo,
) -> None:
    # A second broker_auth process on the same database and pool.
    twin = start_auth_stack(
        tmp_path_factory.mktemp("attacks-twin"),
        arena.stack.broker,
        ferret.url,
        arena.net.url,
        {
            "MONGO_DB": arena.stack.env["MONGO_DB"],
            "BROKER_ADMIN_TOKEN": arena.stack.admin_token,
            "IOTA_DEPOSIT_ADDRESSES_FILE": "",
        },
        pool_size=0,
    )
    try:
        buyers = [arena.buyer("crowd") for _ in range(4)]
        created: list[str] = []
        errors: list[str] = []
        lock = threading.Lock()

        def order_many(url: str, auth: tuple[str, str]) -> None:
            with httpx.Client(base_url=url, timeout=30) as c:
                for _ in range(4):
                    r = c.post("/api/orders", json={"product_id": "slow", "hours": 0.01}, auth=auth)
                    with lock:
                        if r.status_code == 201:
                            created.append(r.json()["address"])
                        else:
                            errors.append(r.text)

        threads = [
            threading.Thread(target=order_many, args=(url, b))
            for b in buyers
            for url in (arena.stack.api_url, twin.api_url)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not [e for e in errors if "no free deposit address" not in e], errors
        assert len(created) == len(set(created)), "two orders got the same address"
        held = {a["address"] for a in arena.stack.pool_state("assigned")["addresses"]}
        assert set(created) <= held
    finally:
        twin.close()


def test_pool_exhaustion_is_503_and_recovers_when_addresses_are_added(arena: Arena) -> None:
    buyer = arena.buyer("exhaust")
    while arena.stack.pool_state()["counts"]["free"] > 0:
        arena.order(buyer)
    r = arena.http().post("/api/orders", json={"product_id": "slow", "hours": 0.01}, auth=buyer)
    assert r.status_code == 503 and "no free deposit address" in r.json()["detail"]
    health = httpx.get(f"{arena.stack.api_url}/healthz", timeout=10)
    assert health.status_code == 503 and health.json()["deposit_addresses"] == "empty"
    fresh = [random_address() for _ in range(3)]
    added = arena.http().post(
        "/api/deposit-addresses", json={"addresses": fresh}, headers=arena.stack.admin
    )
    assert added.status_code == 200 and added.json()["added"] == 3, added.text
    assert arena.order(buyer)["address"] in fresh


def test_spent_addresses_are_refused_by_the_pool_and_by_the_wallet(arena: Arena) -> None:
    seed = arena.funded_seed(10)
    spent = str(payments.scan_seed(arena.net.url, seed).used[0])
    payments.pay(arena.net.url, seed, random_address(), "SPEND", 10)  # spends it
    r = arena.http().post(
        "/api/deposit-addresses",
        json={"addresses": [spent, "NOT-AN-ADDRESS", "M" * 81]},
        headers=arena.stack.admin,
    )
    assert r.status_code == 200, r.text
    reasons = {x["address"]: x["reason"] for x in r.json()["refused"]}
    assert "spent" in reasons[spent]
    assert "NOT-AN-ADDRESS" in reasons and "M" * 81 in reasons  # not trytes; last trit not 0
    assert r.json()["added"] == 0
    other = arena.funded_seed(5)
    with pytest.raises(payments.SpentAddressError):
        payments.pay(arena.net.url, other, spent, "TOSPENT", 5)
    # Admin only.
    assert (
        arena.http().post("/api/deposit-addresses", json={"addresses": [spent]}).status_code == 401
    )


def test_a_thousand_addresses_load_in_one_call(arena: Arena) -> None:
    # Far over the general 16 KiB body limit: the import routes take up to 1,000 addresses.
    fresh = [random_address() for _ in range(1000)]
    r = arena.http().post(
        "/api/deposit-addresses", json={"addresses": fresh}, headers=arena.stack.admin
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"added": 1000, "already_known": 0, "refused": []}
    too_many = arena.http().post(
        "/api/deposit-addresses", json={"addresses": [*fresh, fresh[0]]}, headers=arena.stack.admin
    )
    assert too_many.status_code == 422
