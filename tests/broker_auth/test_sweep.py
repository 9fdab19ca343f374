"""The seller's withdrawal: `iot-wallet addresses` offline, then `iot-wallet sweep` of closed ones.

Jane's pool comes from her own seed; broker_auth never sees it. The sweep must move the value
of closed addresses only (an order still watching its address keeps it), to the one address
she names, and broker_auth then never hands those addresses out again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from iota import Address, Iota
from iota.crypto.types import Seed

from testing import procs
from testing.addresses import random_address
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from wallet import payments, seller

FAST = 3_600_000  # 1000 iota a second


def test_sweep_moves_closed_addresses_only(
    auth_stack_factory: AuthStackFactory, devnet: procs.Devnet, tmp_path: Path
) -> None:
    jane = str(Seed.random())
    pool = seller.derive_addresses(jane, 0, 4)
    stack = auth_stack_factory(
        "sweep",
        pool=pool,
        ORDER_PAYMENT_WINDOW_S="1",
        LATE_PAYMENT_WINDOW_S="12",
        STRAY_SCAN_INTERVAL_S="1",
    )
    stack.create_product("fast", "live/plug-1/#", FAST)
    stack.create_product("slow", "live/plug-1/#", 3600)  # 1 iota a second
    john = ("john-sweep", "sweep-password-1")
    stack.register(*john)
    api = stack.http()

    def order(product: str = "fast", hours: float = 1 / 3600) -> dict[str, Any]:
        r = api.post("/api/orders", json={"product_id": product, "hours": hours}, auth=john)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    def confirmed(o: dict[str, Any], iota: int) -> None:
        wait_for(
            lambda: (
                api.get(f"/api/orders/{o['order_id']}", auth=john).json()["confirmed_iota"] == iota
            ),
            30,
            f"{iota} iota on {o['order_id']}",
            0.1,
        )

    buyer = Seed.random()
    payments.fund_from_faucet(devnet.faucet_url, devnet.url, buyer, 10_000)
    first = order()
    payments.pay(devnet.url, buyer, first["address"], first["tag"], 2000)
    confirmed(first, 2000)
    wait_for(
        lambda: (
            [a["address"] for a in stack.pool_state("closed")["addresses"]] == [first["address"]]
        ),
        30,
        "the first address to close",
        0.2,
    )
    # Still watched while Jane sweeps, however slow the machine: its 1000 s grant keeps the
    # address watched (a 1 s one left it to close within the late window, mid-sweep).
    second = order("slow", 1000 / 3600)
    payments.pay(devnet.url, buyer, second["address"], second["tag"], 1000)
    confirmed(second, 1000)

    to = random_address()
    seed_file = tmp_path / "jane.seed"
    seed_file.write_text(jane + "\n")
    os.chmod(seed_file, 0o600)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "wallet",
            "sweep",
            "--seed-file",
            str(seed_file),
            "--node",
            devnet.url,
            "--api",
            stack.api_url,
            "--to",
            to,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "BROKER_ADMIN_TOKEN": stack.admin_token},
    )
    assert done.returncode == 0, done.stderr
    assert f"swept 1 closed address(es): 2000 iota to {to}" in done.stdout
    assert jane not in done.stdout + done.stderr

    node = Iota(devnet.url)
    balances = node.get_balances(
        [Address(a.encode()) for a in (first["address"], second["address"], to)]
    )
    assert [int(b) for b in balances["balances"]] == [0, 1000, 2000]
    states = {a["address"]: a["state"] for a in stack.pool_state()["addresses"]}
    assert states[first["address"]] == "swept" and states[second["address"]] == "assigned"
    assert sorted(
        v for a, v in states.items() if a not in (first["address"], second["address"])
    ) == ["free", "free"]
    # An address still held cannot be marked swept, and a swept one is never handed out again.
    r = httpx.post(
        f"{stack.api_url}/api/deposit-addresses/swept",
        json={"addresses": [second["address"]], "bundle": "9" * 81},
        headers=stack.admin,
        timeout=10,
    )
    assert r.status_code == 409, r.text
    handed = {order()["address"], order()["address"]}
    assert first["address"] not in handed and handed <= set(pool)
    # Nothing closed is left to sweep: a second run moves nothing.
    again = seller.sweep(devnet.url, jane, stack.api_url, stack.admin_token, to)
    assert again.value == 0 and again.bundles == ()


def test_addresses_cli_is_offline_and_matches_the_library(tmp_path: Path) -> None:
    seed_file = tmp_path / "jane.seed"
    seed_file.write_text(str(Seed.random()) + "\n")
    os.chmod(seed_file, 0o600)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "wallet",
            "addresses",
            "--seed-file",
            str(seed_file),
            "--start",
            "2",
            "--count",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "IOTA_NODE_URL": "http://127.0.0.1:9"},  # no node needed
    ).stdout.split()
    seed = seed_file.read_text().strip()
    assert out == seller.derive_addresses(seed, 2, 3)
    assert seed not in " ".join(out)
    assert (tmp_path / "jane.seed.index").read_text().split()[2:5] == out
