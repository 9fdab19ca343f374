"""Sealed purchases against real Hornet, broker_auth and Mosquitto: live access bought with
nothing but a payment, and every way a stranger could abuse it.

A quote is asked anonymously; the buyer seals the MQTT login it wants (with the quote's id,
address and secret) to the seller's key and sends it as the message of the value transaction
that pays the quote. Each hostile payment below is confirmed on the ledger and must stay
unmatched, with its reason shown to the seller and on the quote, and no account changed.

Product `slow`: 3600 iota/h (1 iota buys 1 s) on live/plug-1/#.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from iota import (
    Address,
    Fragment,
    Iota,
    ProposedTransaction,
    Tag,
    Transaction,
    TransactionTrytes,
    TryteString,
)
from iota.crypto.types import Seed
from nacl.public import PrivateKey, SealedBox
from pymongo import MongoClient
from pymongo.database import Database

from broker_auth.sealed import claims, message
from broker_auth.sealed.message import Credentials
from stack.mqtt_probe import MqttProbe
from testing import procs
from testing.addresses import random_address
from testing.broker_auth import AuthStack
from testing.mqtt import wait_for_access
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.broker_auth.test_attacks import Arena
from tests.conftest import Mongo
from wallet import payments

PRICE = 3600
HOURS = 60 / 3600  # 60 iota: 60 s
LIVE = "live/plug-1/#"


@dataclass
class Shop:
    arena: Arena
    device_password: str
    seller_key: bytes
    # Every password and quote secret this module used: none may be stored or logged in clear.
    secrets_used: list[str] = field(default_factory=list)

    @property
    def stack(self) -> AuthStack:
        return self.arena.stack

    def http(self) -> httpx.Client:
        return self.stack.http()

    def quote(self, hours: float = HOURS) -> dict[str, Any]:
        r = self.http().post("/api/quotes", json={"product_id": "slow", "hours": hours})
        assert r.status_code == 201, r.text
        quote: dict[str, Any] = r.json()
        self.secrets_used.append(quote["quote_secret"])
        return quote

    def status(self, quote_id: str) -> dict[str, Any]:
        r = self.http().get(f"/api/quotes/{quote_id}")
        assert r.status_code == 200, r.text
        found: dict[str, Any] = r.json()
        return found

    def credentials(self, quote: dict[str, Any], username: str, **changes: str) -> Credentials:
        password = changes.pop("password", f"pw-{secrets.token_hex(8)}")
        self.secrets_used.append(password)
        fields = {
            "quote_id": quote["quote_id"],
            "address": quote["address"],
            "secret": quote["quote_secret"],
            "username": username,
            "password": password,
            **changes,
        }
        return Credentials(**fields)

    def sealed(self, credentials: Credentials, key: bytes | None = None) -> str:
        return message.seal(credentials, key or self.seller_key)

    def pay(
        self, quote: dict[str, Any], trytes: str, value: int | None = None
    ) -> list[Transaction]:
        """Pay the quote from a fresh seed with `trytes` as the value transaction's message."""
        amount = value if value is not None else int(quote["amount_iota"])
        seed = self.arena.funded_seed(amount)
        return self.arena.send(self.signed(seed, quote, trytes, amount))

    def signed(
        self, seed: Seed, quote: dict[str, Any], trytes: str, amount: int
    ) -> list[TransactionTrytes]:
        state, inputs = self.arena.funded_inputs(seed)
        out = ProposedTransaction(
            address=Address(quote["address"].encode()),
            value=amount,
            tag=Tag(quote["tag"].encode()),
            message=TryteString(trytes.encode()) if trytes else None,
        )
        bundle: list[TransactionTrytes] = Iota(self.arena.net.url, seed).prepare_transfer(
            transfers=[out],
            inputs=inputs,
            change_address=state.next_unused,
            security_level=payments.SECURITY_LEVEL,
        )["trytes"]
        return bundle

    def settled(self, quote_id: str, timeout: float = 60) -> dict[str, Any]:
        """The quote once its payment is confirmed and its sealed message judged."""

        def done() -> dict[str, Any] | None:
            s = self.status(quote_id)
            return s if s["confirmed_iota"] > 0 and (s["username"] or s["reason"]) else None

        found: dict[str, Any] = wait_for(done, timeout, f"quote {quote_id} settled", 0.2)
        return found

    def payment_of(self, address: str) -> dict[str, Any]:
        (payment,) = self.arena.payments_to(address)
        return payment

    def grant_end(self, username: str) -> float:
        grants = self.http().get("/api/grants/all", headers=self.stack.admin).json()
        (grant,) = [g for g in grants if g["username"] == username]
        return dt.datetime.fromisoformat(grant["expires_at"].replace("Z", "+00:00")).timestamp()

    def can_register(self, username: str) -> bool:
        r = self.http().post(
            "/api/accounts", json={"username": username, "password": "a-new-password-1"}
        )
        return r.status_code == 201

    def receives_live(self, username: str, password: str) -> bool:
        access = wait_for_access(self.stack.broker.port, username, password, LIVE, 30)
        try:
            device = MqttProbe(self.stack.broker.port, "device.plug-1", self.device_password)
            assert device.connect()
            device.publish("live/plug-1/power", json.dumps({"ts": time.time(), "value": 42.0}))
            got = access.probe.next_message(10)
            device.close()
            return got is not None and got.topic == "live/plug-1/power"
        finally:
            access.probe.close()


@pytest.fixture(scope="module")
def shop(auth_stack_factory: AuthStackFactory, devnet: procs.Devnet) -> Iterator[Shop]:
    stack = auth_stack_factory("sealed", node_url=devnet.url, STRAY_SCAN_INTERVAL_S="1")
    wait_for(lambda: (stack.health() or {}).get("status") == "ok", 30, "healthz ok")
    stack.create_product("slow", LIVE, PRICE)
    device_password = stack.create_device("plug-1")
    key = stack.http().get("/api/seller-key").json()
    assert key["alg"] == "x25519-sealedbox"
    yield Shop(Arena(devnet, stack), device_password, base64.b64decode(key["public_key"]))


def test_iot_wallet_buy_gives_a_working_mqtt_login_without_an_account(
    shop: Shop, tmp_path: Path
) -> None:
    seed_file = tmp_path / "ann.seed"
    wallet = [sys.executable, "-m", "wallet"]
    subprocess.run([*wallet, "new-seed", "--seed-file", str(seed_file)], check=True)
    payments.fund_from_faucet(
        shop.arena.net.faucet_url, shop.arena.net.url, seed_file.read_text().strip(), 100
    )
    username, password = f"ann-{secrets.token_hex(3)}", f"ann-pw-{secrets.token_hex(8)}"
    shop.secrets_used.append(password)
    done = subprocess.run(
        [
            *wallet,
            "buy",
            "--node",
            shop.arena.net.url,
            "--seed-file",
            str(seed_file),
            "--api",
            shop.stack.api_url,
            "--product",
            "slow",
            "--hours",
            str(HOURS),
            "--username",
            username,
            "--timeout",
            "120",
        ],
        env={**os.environ, "IOT_WALLET_MQTT_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert f"MQTT login: username {username}" in done.stdout
    assert password not in done.stdout + done.stderr
    assert shop.receives_live(username, password)
    # MQTT only: the password opens no HTTP session, and the name is taken.
    assert shop.http().get("/api/orders", auth=(username, password)).status_code == 401
    assert not shop.can_register(username)
    (grant,) = [
        g
        for g in shop.http().get("/api/grants/all", headers=shop.stack.admin).json()
        if g["username"] == username
    ]
    assert grant["product_id"] == "slow"


def test_the_seller_key_is_retained_for_anonymous_mqtt_clients(shop: Shop) -> None:
    anonymous = MqttProbe(shop.stack.broker.port)
    try:
        assert anonymous.connect()
        assert anonymous.subscribe("info/#", qos=0)
        got = anonymous.next_message(10)
        assert got is not None and got.topic == "info/seller-key"
        assert base64.b64decode(json.loads(got.payload)["public_key"]) == shop.seller_key
        # Anonymous clients read it, never write it.
        anonymous.publish("info/seller-key", "forged", qos=0, retain=True)
    finally:
        anonymous.close()
    reader = MqttProbe(shop.stack.broker.port)
    try:
        assert reader.connect() and reader.subscribe("info/#", qos=0)
        got = reader.next_message(10)
        assert got is not None and b"forged" not in got.payload
    finally:
        reader.close()


def test_hostile_payments_stay_unmatched_with_their_reason_and_change_no_account(
    shop: Shop,
) -> None:
    victim = shop.arena.buyer("victim")
    victim_mqtt = shop.stack.mqtt_passwords[victim[0]]
    first = shop.quote()
    honest = shop.credentials(first, f"first-{secrets.token_hex(3)}")
    copied = shop.sealed(honest)
    cases: list[tuple[str, dict[str, Any], str, str]] = []  # (case, quote, message, reason)

    def case(name: str, reason: str, build: Any) -> None:
        quote = shop.quote()
        cases.append((name, quote, build(quote), reason))

    case(
        "taken username",
        claims.USERNAME_TAKEN,
        lambda q: shop.sealed(shop.credentials(q, victim[0])),
    )
    case("garbage", message.NO_MESSAGE, lambda q: "GARBAGE9" * 50)
    case("no message", message.NO_MESSAGE, lambda q: "")
    case(
        "sealed to another key",
        message.DOES_NOT_OPEN,
        lambda q: shop.sealed(
            shop.credentials(q, "other-key-user"), bytes(PrivateKey.generate().public_key)
        ),
    )
    case("copied from another payment", message.OTHER_QUOTE, lambda q: copied)
    case(
        "guessed secret",
        message.OTHER_QUOTE,
        lambda q: shop.sealed(shop.credentials(q, "guesser", secret="guess")),
    )
    case(
        "username against the rules",
        "username breaks the account rules",
        lambda q: shop.sealed(shop.credentials(q, "Bad Name!")),
    )
    oversized = SealedBox(PrivateKey.generate().public_key).encrypt(b"x" * 1500)
    split = str(TryteString.from_bytes(message.PREFIX + base64.b64encode(oversized)))
    assert len(split) > message.MAX_MESSAGE_TRYTES  # PyOTA splits it over two transactions
    case("oversized, split over transactions", message.NO_MESSAGE, lambda q: split)

    shop.pay(first, copied)  # the original: it buys access
    for _, quote, trytes, _ in cases:  # one after the other: the faucet spends one seed
        shop.pay(quote, trytes)
    assert shop.settled(first["quote_id"])["username"] == honest.username

    # The honest quote again, sealed for it but another login: the quote is used.
    again = shop.credentials(first, f"second-{secrets.token_hex(3)}")
    shop.pay(first, shop.sealed(again))
    wait_for(
        lambda: len(shop.arena.payments_to(first["address"])) == 2,
        60,
        "second payment to the used quote recorded",
    )
    cases.append(("reused quote", first, "", claims.QUOTE_USED))
    # Its buyer's top-up (no message, as any wallet sends one) is his: the grant grows.
    before = shop.grant_end(honest.username)
    shop.pay(first, "", value=30)
    topped = wait_for(
        lambda: [
            p
            for p in shop.arena.payments_to(first["address"])
            if p["credited"] and p["amount_iota"] == 30
        ],
        60,
        "the top-up credited",
    )
    assert topped[0]["username"] == honest.username and topped[0]["matched"]
    assert shop.grant_end(honest.username) - before >= 29  # 30 iota: 30 s more

    for name, quote, _, reason in cases:
        if name == "reused quote":
            payment = wait_for(
                lambda: next(
                    (p for p in shop.arena.payments_to(first["address"]) if p["unmatched_reason"]),
                    None,
                ),
                60,
                "reused quote's payment judged",
            )
            assert payment["unmatched_reason"] == reason and not payment["matched"]
            assert shop.status(quote["quote_id"])["username"] == honest.username
            continue
        status = shop.settled(quote["quote_id"])
        assert status["username"] is None, (name, status)
        assert status["reason"] == reason, (name, status)
        payment = shop.payment_of(quote["address"])
        assert not payment["matched"] and not payment["credited"], (name, payment)
        assert payment["unmatched_reason"] == reason and payment["grant_seconds"] is None, name
    # No account was made or changed: the names are free, the victim logs in as before.
    for username in ("other-key-user", "guesser", again.username):
        assert shop.can_register(username), username
    assert shop.http().get("/api/orders", auth=victim).status_code == 200
    probe = MqttProbe(shop.stack.broker.port, victim[0], victim_mqtt)
    assert probe.connect()
    probe.close()
    assert shop.stack.client_roles(victim[0]) is not None
    assert not any(
        g["username"] == victim[0]
        for g in shop.http().get("/api/grants/all", headers=shop.stack.admin).json()
    )


def test_a_third_party_reattaching_the_bundle_with_its_own_login_gets_nothing(
    shop: Shop,
) -> None:
    """The message is not covered by the bundle hash: a copy of the buyer's bundle with the
    third party's sealed login is valid and attached first. Every attachment is read; only the
    buyer's names the quote's secret."""
    quote = shop.quote()
    buyer = shop.credentials(quote, f"buyer-{secrets.token_hex(3)}")
    # The thief knows the quote's id and address (say, the buyer leaked them), not its secret.
    thief = shop.credentials(quote, f"thief-{secrets.token_hex(3)}", secret="guessed")
    seed = shop.arena.funded_seed(int(quote["amount_iota"]))
    bundle = shop.signed(seed, quote, shop.sealed(buyer), int(quote["amount_iota"]))
    copy = []
    for trytes in bundle:
        tx = Transaction.from_tryte_string(trytes)
        if tx.value > 0 and str(tx.address) == quote["address"]:
            tx.signature_message_fragment = Fragment(shop.sealed(thief).encode())
        copy.append(tx.as_tryte_string())
    stolen = shop.arena.send(copy)  # the third party's copy first
    real = shop.arena.send(bundle)
    assert {t.bundle_hash for t in stolen} == {t.bundle_hash for t in real}
    assert {t.hash for t in stolen}.isdisjoint({t.hash for t in real})
    status = shop.settled(quote["quote_id"])
    assert status["username"] == buyer.username, status
    assert shop.receives_live(buyer.username, buyer.password)
    assert shop.can_register(thief.username)


def test_with_the_broker_down_at_confirmation_the_sealed_buyer_is_made_once_it_is_back(
    shop: Shop,
) -> None:
    """The claim makes the account, then its MQTT client: with Mosquitto stopped the second
    step fails after the first (a crash in the middle). The payment stays uncredited and is
    claimed again until the broker is back; the same quote's account is then completed."""
    quote = shop.quote()
    buyer = shop.credentials(quote, f"later-{secrets.token_hex(3)}")
    trytes = shop.sealed(buyer)
    shop.stack.broker.proc.stop()
    try:
        shop.pay(quote, trytes)
        payment = wait_for(
            lambda: next(iter(shop.arena.payments_to(quote["address"])), None),
            60,
            "the payment recorded while the broker is down",
        )
        time.sleep(2)  # several claims fail meanwhile
        assert not shop.arena.payments_to(quote["address"])[0]["credited"], payment
        assert shop.status(quote["quote_id"])["username"] is None
    finally:
        shop.stack.broker.proc.start()
    status = shop.settled(quote["quote_id"], timeout=90)
    assert status["username"] == buyer.username and status["reason"] is None
    assert shop.receives_live(buyer.username, buyer.password)
    (payment,) = shop.arena.payments_to(quote["address"])
    assert payment["credited"] and payment["matched"] and payment["grant_seconds"] == 60


def test_anonymous_quotes_cannot_empty_the_pool(
    auth_stack_factory: AuthStackFactory, devnet: procs.Devnet
) -> None:
    """One client address asking for quotes from 4 threads holds MAX_UNPAID_QUOTES addresses;
    everyone else still gets one."""
    pool = [random_address() for _ in range(20)]
    stack = auth_stack_factory(
        "sealed-pool",
        node_url=devnet.url,
        pool=pool,
        MAX_UNPAID_QUOTES="3",
        ORDER_MAX_PER_IP="100000",
    )
    wait_for(lambda: (stack.health() or {}).get("status") == "ok", 30, "healthz ok")
    stack.create_product("slow", LIVE, PRICE)
    codes: list[int] = []
    lock = threading.Lock()
    stop = time.monotonic() + 10

    def attacker() -> None:
        with httpx.Client(base_url=stack.api_url, timeout=15) as http:
            while time.monotonic() < stop:
                r = http.post("/api/quotes", json={"product_id": "slow", "hours": 0.01})
                with lock:
                    codes.append(r.status_code)

    threads = [threading.Thread(target=attacker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes.count(201) == 3, {c: codes.count(c) for c in set(codes)}
    assert set(codes) == {201, 429}
    assert (stack.health() or {})["free_addresses"] == len(pool) - 3
    honest = ("honest-buyer", "honest-password-1")
    stack.register(*honest)
    assert (
        stack.http()
        .post("/api/orders", json={"product_id": "slow", "hours": 0.01}, auth=honest)
        .status_code
        == 201
    )


def test_sealed_logins_and_quote_secrets_are_never_stored_or_logged_in_clear(
    shop: Shop, ferret: Mongo
) -> None:
    assert shop.secrets_used  # the purchases above ran first
    log = shop.stack.proc.log_path.read_text(errors="replace")
    db: Database[dict[str, Any]] = MongoClient(ferret.url)[shop.stack.env["MONGO_DB"]]
    stored = "\n".join(
        json.dumps(doc, default=str)
        for name in db.list_collection_names()
        for doc in db[name].find()
    )
    for secret in shop.secrets_used:
        assert secret not in log
        assert secret not in stored
    # The info-reader role added to older dynamic-security files did not stall reconciliation.
    assert "reconciliation postponed" not in log
