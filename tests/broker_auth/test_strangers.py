"""A stranger cannot hurt the shop for free: each attack first, against real Hornet and broker_auth.

- one free account ordering from 4 threads cannot empty the deposit-address pool (the
  unpaid-order cap and the order throttles), while an honest buyer on another address is
  never refused; cancelling frees an address at once; never-paid addresses come back after
  their hold, and a payment inside the hold still counts;
- 200 real signed bundles double-spending one input against one order neither slow the
  watcher's poll past WATCHER_INTERVAL_S nor delay another buyer's grant, and the order shows
  only value that can still confirm;
- an old order is no price lock: value beyond the ordered amount buys at today's price, and
  nothing (refund due) once the product is off sale.

Product `slow`: 3600 iota/h, so 1 iota buys 1 s.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from iota import Address, ProposedBundle, ProposedTransaction, Tag, TransactionHash
from iota.crypto.signing import KeyGenerator
from iota.crypto.types import Seed

from testing.addresses import random_address
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.broker_auth.test_attacks import PRICE, Arena
from tests.devnet_fixture import start_devnet

POOL_SIZE = 46  # what the attack emptied in 5.8 s
ATTACK_S = 60.0
WATCHER_INTERVAL_S = 0.5  # the default: the target for a poll under attack
CONFLICTING_BUNDLES = 200


def login(arena: Arena, auth: tuple[str, str]) -> dict[str, str]:
    r = arena.http().post("/api/sessions", json={"username": auth[0], "password": auth[1]})
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def free_addresses(arena: Arena) -> set[str]:
    body = arena.stack.pool_state("free")
    return {str(a["address"]) for a in body["addresses"]}


def metric(arena: Arena, name: str) -> dict[str, float]:
    """Samples of one metric family from /metrics: {'name{labels}': value}."""
    text = httpx.get(f"{arena.stack.api_url}/metrics", timeout=5).text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            found[key] = float(value)
    return found


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    devnet = start_devnet(tmp_path_factory.mktemp("strangers-devnet"))
    try:
        yield devnet
    finally:
        devnet.stop()


def _open_shop(
    factory: AuthStackFactory, net: Any, name: str, pool: list[str] | None = None, **env: str
) -> Arena:
    """broker_auth on the module's devnet with `env`, healthy, selling `slow`."""
    stack = factory(name, node_url=net.url, pool=pool, **env)
    wait_for(lambda: (stack.health() or {}).get("status") == "ok", 30, "healthz ok")
    stack.create_product("slow", "live/plug-1/#", PRICE)
    return Arena(net, stack)


@pytest.fixture(scope="module")
def pool_shop(auth_stack_factory: AuthStackFactory, net: Any) -> Arena:
    """The limits at their defaults but the per-buyer order throttle, which the honest buyer
    (ordering and cancelling once a second for a minute) would reach by design."""
    return _open_shop(
        auth_stack_factory,
        net,
        "strangers-pool",
        pool=[random_address() for _ in range(POOL_SIZE)],
        MAX_UNPAID_ORDERS="3",
        ORDER_MAX_PER_BUYER="200",
        ORDER_MAX_PER_IP="60",
        ORDER_WINDOW_S="600",
    )


@pytest.fixture(scope="module")
def shop(auth_stack_factory: AuthStackFactory, net: Any) -> Arena:
    """The unpaid-order cap at its default, the watcher at its default interval."""
    return _open_shop(
        auth_stack_factory,
        net,
        "strangers",
        pool=[random_address() for _ in range(POOL_SIZE)],
        WATCHER_INTERVAL_S=str(WATCHER_INTERVAL_S),
        MAX_UNPAID_ORDERS="3",
    )


@pytest.fixture(scope="module")
def hold_shop(auth_stack_factory: AuthStackFactory, net: Any) -> Arena:
    """Short windows: a 4 s payment window, then a 6 s hold for orders never paid; unpaid
    orders past their window are read every 8 s (the stray scan), the smallest order 50 iota."""
    return _open_shop(
        auth_stack_factory,
        net,
        "strangers-hold",
        ORDER_PAYMENT_WINDOW_S="4",
        UNPAID_HOLD_S="6",
        LATE_PAYMENT_WINDOW_S="600",
        STRAY_SCAN_INTERVAL_S="8",
        MIN_ORDER_IOTA="50",
    )


# -- the pool ------------------------------------------------------------------------------
def test_one_free_account_cannot_empty_the_pool(pool_shop: Arena) -> None:
    attacker = login(pool_shop, pool_shop.buyer("greedy"))
    honest = login(pool_shop, pool_shop.buyer("honest"))
    stop = threading.Event()
    attacker_codes: collections.Counter[int] = collections.Counter()
    details: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    order = {"product_id": "slow", "hours": 0.0001}  # 1 iota, never paid

    def attack() -> None:
        with httpx.Client(base_url=pool_shop.stack.api_url, headers=attacker, timeout=15) as c:
            while not stop.is_set():
                r = c.post("/api/orders", json=order)
                with lock:
                    attacker_codes[r.status_code] += 1
                    if r.status_code == 429:
                        details[re.sub(r"\d+", "N", r.json()["detail"])[:80]] += 1

    min_free = [POOL_SIZE]

    def watch_pool() -> None:
        while not stop.wait(0.5):
            min_free[0] = min(min_free[0], len(free_addresses(pool_shop)))

    threads = [threading.Thread(target=attack) for _ in range(4)]
    threads.append(threading.Thread(target=watch_pool))
    for t in threads:
        t.start()
    honest_answers: list[tuple[int, int]] = []
    # The honest buyer comes from another client address (127.0.0.2 is loopback too).
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    started = time.monotonic()
    try:
        with httpx.Client(
            base_url=pool_shop.stack.api_url, headers=honest, timeout=15, transport=transport
        ) as c:
            while time.monotonic() - started < ATTACK_S:
                tick = time.monotonic()
                r = c.post("/api/orders", json=order)
                cancelled = c.delete(f"/api/orders/{r.json()['order_id']}").status_code
                honest_answers.append((r.status_code, cancelled))
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        stop.set()
        for t in threads:
            t.join()
    print(
        f"\npool under attack for {ATTACK_S:g} s: attacker {dict(attacker_codes)}"
        f" ({dict(details)}); honest {len(honest_answers)} orders, all"
        f" {collections.Counter(honest_answers)}; free addresses never below {min_free[0]}"
        f" of {POOL_SIZE}"
    )
    assert honest_answers and all(a == (201, 204) for a in honest_answers), honest_answers
    assert attacker_codes[201] == 3, attacker_codes  # MAX_UNPAID_ORDERS, never paid
    assert attacker_codes[429] > 100 and set(attacker_codes) == {201, 429}, attacker_codes
    assert any("ORDER_MAX_PER_IP" in d for d in details), details  # throttled, not just capped
    assert min_free[0] >= POOL_SIZE - 3 - 1
    assert (pool_shop.stack.health() or {}).get("deposit_addresses") == "ok"


def test_cancel_frees_the_address_at_once_and_only_the_owner_may(shop: Arena) -> None:
    buyer, other = shop.buyer("canceller"), shop.buyer("nosy")
    orders = [shop.order(buyer) for _ in range(3)]
    r = shop.http().post("/api/orders", json={"product_id": "slow", "hours": 0.01}, auth=buyer)
    assert r.status_code == 429 and "MAX_UNPAID_ORDERS=3" in r.json()["detail"], r.text
    first = orders[0]
    assert shop.http().delete(f"/api/orders/{first['order_id']}", auth=other).status_code == 404
    assert shop.http().delete(f"/api/orders/{first['order_id']}").status_code == 401
    assert first["address"] not in free_addresses(shop)
    assert shop.http().delete(f"/api/orders/{first['order_id']}", auth=buyer).status_code == 204
    assert first["address"] in free_addresses(shop)  # at once
    assert shop.get_order(buyer, first["order_id"])["status"] == "cancelled"
    assert shop.http().delete(f"/api/orders/{first['order_id']}", auth=buyer).status_code == 204
    shop.order(buyer)  # a place under the cap again
    for o in orders[1:]:
        assert shop.http().delete(f"/api/orders/{o['order_id']}", auth=buyer).status_code == 204


def test_an_order_with_a_payment_on_its_way_cannot_be_cancelled(shop: Arena) -> None:
    buyer = shop.buyer("paying")
    order = shop.order(buyer)  # 36 iota
    seed = shop.funded_seed(36)
    shop.send(shop.signed_transfer(seed, [(order["address"], 36, order["tag"])]))
    r = shop.http().delete(f"/api/orders/{order['order_id']}", auth=buyer)
    assert r.status_code == 409, r.text
    assert order["address"] not in free_addresses(shop)
    shop.wait_confirmed(buyer, order["order_id"], 36)
    r = shop.http().delete(f"/api/orders/{order['order_id']}", auth=buyer)
    assert r.status_code == 409, r.text


def test_never_paid_addresses_return_after_their_hold_and_a_payment_inside_it_counts(
    hold_shop: Arena,
) -> None:
    never, late = hold_shop.buyer("never"), hold_shop.buyer("late")
    r = hold_shop.http().post("/api/orders", json={"product_id": "slow", "hours": 0.01}, auth=late)
    assert r.status_code == 422 and "MIN_ORDER_IOTA" in r.text, r.text  # 36 iota: dust
    abandoned = hold_shop.order(never, hours=0.02)  # 72 iota
    paid_late = hold_shop.order(late, hours=0.02)
    seed = hold_shop.funded_seed(72)
    wait_for(lambda: time.time() > _ts(paid_late["expires_at"]) + 0.5, 10, "payment window over")
    assert abandoned["address"] not in free_addresses(hold_shop)  # held after its window
    # Paid inside the hold, confirmed around its end: the address is read (and the payment
    # recorded for its order) before it could go back to the pool.
    hold_shop.send(hold_shop.signed_transfer(seed, [(paid_late["address"], 72, paid_late["tag"])]))
    deadline = _ts(paid_late["expires_at"]) + 6 + 20
    while time.time() < deadline:
        assert paid_late["address"] not in free_addresses(hold_shop)
        if hold_shop.get_order(late, paid_late["order_id"])["confirmed_iota"] == 72:
            break
        time.sleep(0.3)
    assert hold_shop.get_order(late, paid_late["order_id"])["confirmed_iota"] == 72
    r = hold_shop.http().get("/api/grants", auth=late)
    assert [g["product_id"] for g in r.json()] == ["slow"], r.text
    # The hold is over (4 s window + 6 s): the never-paid address is free again, at the end
    # of the queue; the paid one stays held for its late-payment window.
    wait_for(
        lambda: abandoned["address"] in free_addresses(hold_shop),
        30,
        "the never-paid address back in the free queue",
        0.2,
    )
    assert paid_late["address"] not in free_addresses(hold_shop)
    assert hold_shop.get_order(never, abandoned["order_id"])["status"] == "expired"
    free = hold_shop.stack.pool_state("free")["addresses"]
    assert free[-1]["address"] == abandoned["address"]  # the queue's end
    # Value sent to it now is no payment of the old order: kept as unmatched.
    stray = hold_shop.funded_seed(5)
    hold_shop.send(hold_shop.signed_transfer(stray, [(abandoned["address"], 5, abandoned["tag"])]))
    (unmatched,) = wait_for(
        lambda: hold_shop.payments_to(abandoned["address"]), 30, "the unmatched record", 0.3
    )
    assert unmatched["matched"] is False and unmatched["amount_iota"] == 5
    assert hold_shop.get_order(never, abandoned["order_id"])["confirmed_iota"] == 0


def test_a_dust_payment_does_not_free_a_place_under_the_cap(shop: Arena) -> None:
    buyer = shop.buyer("duster")
    orders = [shop.order(buyer) for _ in range(3)]  # 36 iota each
    seed = shop.funded_seed(40)
    # 1 iota to each order in one bundle: each is "paid", none in full.
    shop.send(shop.signed_transfer(seed, [(o["address"], 1, o["tag"]) for o in orders]))
    for o in orders:
        shop.wait_confirmed(buyer, o["order_id"], 1)
    r = shop.http().post("/api/orders", json={"product_id": "slow", "hours": 0.01}, auth=buyer)
    assert r.status_code == 429 and "MAX_UNPAID_ORDERS" in r.json()["detail"], r.text
    top_up = shop.funded_seed(35)
    shop.send(shop.signed_transfer(top_up, [(orders[0]["address"], 35, orders[0]["tag"])]))
    shop.wait_confirmed(buyer, orders[0]["order_id"], 36)
    shop.order(buyer)  # paid in full: its place is free


def _ts(rfc3339: str) -> float:
    return dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


# -- conflicting bundles -------------------------------------------------------------------
def _conflicting_bundles(arena: Arena, seed: Seed, address: str, count: int) -> list[Any]:
    """`count` real signed bundles all spending the seed's one funded input: 1 iota each to
    `address`, the rest to change; distinct tags make distinct bundle hashes. Built here as
    PyOTA's prepare_transfer does, with the input's key made once (no node call per bundle)."""
    state, (source,) = arena.funded_inputs(seed)
    key = KeyGenerator(seed).get_key_for(source)
    bundles = []
    for i in range(count):
        tag = Tag(f"SPAM{i:04d}".translate(str.maketrans("0123456789", "ABCDEFGHIJ")).encode())
        bundle = ProposedBundle(
            [ProposedTransaction(address=Address(address.encode()), value=1, tag=tag)]
        )
        bundle.add_inputs([source])
        bundle.send_unspent_inputs_to(state.next_unused)
        bundle.finalize()
        bundle.sign_input_at(1, key)  # the input follows the one output
        bundles.append(bundle.as_tryte_strings())
    return bundles


@pytest.mark.timeout(600)  # builds and attaches 200 signed bundles: 2.5 to 4 minutes here
def test_two_hundred_conflicting_bundles_neither_stall_the_watcher_nor_inflate_an_order(
    shop: Arena,
) -> None:
    attacker, victim = shop.buyer("spammer"), shop.buyer("victim")
    target = shop.order(attacker)
    seed = shop.funded_seed(1000)
    victim_order = shop.order(victim)  # 36 iota
    victim_seed = shop.funded_seed(36)
    started = time.monotonic()
    bundles = _conflicting_bundles(shop, seed, target["address"], CONFLICTING_BUNDLES)
    built = time.monotonic()
    polls_before = metric(shop, "broker_auth_watcher_poll_seconds")
    attached = 0
    paid_seen: list[int] = []
    for trytes in bundles:
        shop.attach(trytes)
        attached += 1
        if attached % 20 == 0:
            paid_seen.append(shop.get_order(attacker, target["order_id"])["paid_iota"])
    sent = time.monotonic()
    # The victim pays while the attacker's bundles are pending or conflicting.
    victim_tx = shop.send(
        shop.signed_transfer(victim_seed, [(victim_order["address"], 36, victim_order["tag"])])
    )
    tail = next(tx for tx in victim_tx if tx.current_index == 0)
    api = shop.api

    def included() -> bool:
        states = api.get_latest_inclusion([TransactionHash(str(tail.hash).encode())])
        return bool(next(iter(states["states"].values())))

    wait_for(included, 30, "the victim's payment confirmed", 0.02)
    confirmed_at = time.monotonic()

    def granted() -> bool:
        r = shop.http().get("/api/grants", auth=victim)
        return r.status_code == 200 and bool(r.json())

    wait_for(granted, 15, "the victim's grant", 0.02)
    delay = time.monotonic() - confirmed_at
    time.sleep(3)  # several polls with every bundle attached
    polls_after = metric(shop, "broker_auth_watcher_poll_seconds")

    def delta(suffix: str) -> float:
        key = f"broker_auth_watcher_poll_seconds_{suffix}"
        return polls_after[key] - polls_before.get(key, 0.0)

    polls = delta("count")
    mean = delta("sum") / polls
    over = polls - delta('bucket{le="0.5"}')
    final = shop.get_order(attacker, target["order_id"])
    print(
        f"\n{attached} conflicting bundles attached: {polls:.0f} polls, mean {mean:.3f} s,"
        f" {over:.0f} over {WATCHER_INTERVAL_S} s; victim's grant {delay:.2f} s after his"
        f" confirmation; attacker's paid_iota seen {paid_seen}, final {final['paid_iota']}"
        f" (confirmed {final['confirmed_iota']}); built in {built - started:.0f} s,"
        f" attached in {sent - built:.0f} s"
    )
    assert mean < WATCHER_INTERVAL_S
    assert over <= 0.05 * polls, (over, polls)
    assert delay < 1.0 + WATCHER_INTERVAL_S, delay  # < 1 s plus the poll the check falls in
    assert all(p <= 1 for p in paid_seen), paid_seen  # at most one of them can confirm
    assert final["confirmed_iota"] <= 1 and final["paid_iota"] <= 1, final


# -- price lock ----------------------------------------------------------------------------
def _admin_patch(arena: Arena, product_id: str, **fields: Any) -> None:
    r = arena.http().patch(f"/api/products/{product_id}", json=fields, headers=arena.stack.admin)
    assert r.status_code == 200, r.text


def _payment_for(arena: Arena, order_id: str, total: int) -> list[dict[str, Any]]:
    def found() -> list[dict[str, Any]] | None:
        mine = [p for p in arena.payments() if p["order_id"] == order_id]
        done = sum(p["amount_iota"] for p in mine) >= total and all(p["credited"] for p in mine)
        return mine if done else None

    result: list[dict[str, Any]] = wait_for(found, 30, f"{total} iota credited", 0.2)
    return result


def test_an_old_order_is_no_price_lock_on_a_disabled_product(shop: Arena) -> None:
    shop.stack.create_product("locked", "live/plug-1/#", PRICE)
    buyer = shop.buyer("locker")
    r = shop.http().post("/api/orders", json={"product_id": "locked", "hours": 0.01}, auth=buyer)
    order = r.json()  # 36 iota at 3600 iota/h: 36 s
    assert r.status_code == 201 and order["amount_iota"] == 36
    _admin_patch(shop, "locked", price_iota_per_hour=PRICE * 10, active=False)
    seed = shop.funded_seed(200)
    shop.send(shop.signed_transfer(seed, [(order["address"], 200, order["tag"])]))
    (payment,) = _payment_for(shop, order["order_id"], 200)
    assert payment["grant_seconds"] == pytest.approx(36.0)  # the ordered amount only
    assert payment["refund_due_iota"] == 164
    grants = {g["product_id"]: g for g in shop.http().get("/api/grants", auth=buyer).json()}
    assert _ts(grants["locked"]["expires_at"]) - time.time() < 40
    csv = shop.http().get("/api/payments.csv", headers=shop.stack.admin).text
    header, *rows = csv.splitlines()
    row = next(r for r in rows if r.startswith(payment["payment_id"]))
    assert dict(zip(header.split(","), row.split(","), strict=True))["refund_due_iota"] == "164"


def test_over_and_later_payments_buy_at_the_price_of_the_day(shop: Arena) -> None:
    shop.stack.create_product("dear", "live/plug-1/#", PRICE)
    buyer = shop.buyer("topper")
    r = shop.http().post("/api/orders", json={"product_id": "dear", "hours": 0.01}, auth=buyer)
    order = r.json()  # 36 iota at 3600/h
    _admin_patch(shop, "dear", price_iota_per_hour=PRICE * 2)
    seed = shop.funded_seed(72)
    # Overpaid: 36 at the order's price (36 s) + 36 at today's (18 s).
    shop.send(shop.signed_transfer(seed, [(order["address"], 72, order["tag"])]))
    (first,) = _payment_for(shop, order["order_id"], 72)
    assert first["grant_seconds"] == pytest.approx(54.0) and first["refund_due_iota"] == 0
    # A later top-up to the same address: all of it at today's price.
    _admin_patch(shop, "dear", price_iota_per_hour=PRICE * 4)
    top_up = shop.funded_seed(72)
    shop.send(shop.signed_transfer(top_up, [(order["address"], 72, order["tag"])]))
    both = _payment_for(shop, order["order_id"], 144)
    second = next(p for p in both if p["payment_id"] != first["payment_id"])
    assert second["grant_seconds"] == pytest.approx(18.0) and second["refund_due_iota"] == 0


@pytest.fixture(scope="module")
def late_shop(auth_stack_factory: AuthStackFactory, net: Any) -> Arena:
    """A 2 s payment window and a 3 s late window: a running grant outlives both."""
    return _open_shop(
        auth_stack_factory,
        net,
        "strangers-late",
        ORDER_PAYMENT_WINDOW_S="2",
        LATE_PAYMENT_WINDOW_S="3",
        STRAY_SCAN_INTERVAL_S="1",
    )


def test_instalments_after_the_late_window_buy_at_the_price_of_their_day(
    late_shop: Arena,
) -> None:
    """A big order paid in instalments keeps its address watched while the grant runs, but
    its quote ends with the late window: no lasting price lock through small payments."""
    buyer = late_shop.buyer("instalments")
    order = late_shop.order(buyer, hours=0.1)  # 360 iota at 3600/h
    first = late_shop.funded_seed(60)
    late_shop.send(late_shop.signed_transfer(first, [(order["address"], 60, order["tag"])]))
    (early,) = _payment_for(late_shop, order["order_id"], 60)
    assert early["grant_seconds"] == pytest.approx(60.0)  # inside the quote
    _admin_patch(late_shop, "slow", price_iota_per_hour=PRICE * 2)
    wait_for(lambda: time.time() > _ts(order["expires_at"]) + 3 + 0.5, 10, "the late window to end")
    second = late_shop.funded_seed(60)
    late_shop.send(late_shop.signed_transfer(second, [(order["address"], 60, order["tag"])]))
    both = _payment_for(late_shop, order["order_id"], 120)
    later = next(p for p in both if p["payment_id"] != early["payment_id"])
    assert later["grant_seconds"] == pytest.approx(30.0)  # today's price, not the quote's
