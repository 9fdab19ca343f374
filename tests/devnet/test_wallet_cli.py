"""`iot-wallet` end to end as John and Jane run it: subprocesses against the Hornet devnet."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.devnet.conftest import Node
from wallet import payments
from wallet.__main__ import main as wallet_main

WALLET = [sys.executable, "-m", "wallet"]


def wallet(*args: str) -> str:
    result = subprocess.run(
        [*WALLET, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_new_seed_faucet_pay_balance(node: Node, tmp_path: Path) -> None:
    seed_file = tmp_path / "john.seed"
    out = wallet("new-seed", "--seed-file", str(seed_file))
    seed = seed_file.read_text().strip()
    assert len(seed) == 81 and seed not in out
    assert stat.S_IMODE(os.stat(seed_file).st_mode) == 0o600

    opts = ["--node", node.url, "--seed-file", str(seed_file)]
    first = wallet("address", *opts).strip()
    funded = wallet("faucet", *opts, "--faucet", node.net.faucet_url, "--value", "1000")
    assert f"credited 1000 iota to {first}" in funded

    jane = payments.next_address(node.url, "J" * 81)
    tag = "ORDER9CLI9TEST"
    paid = wallet("pay", *opts, "--address", jane, "--tag", tag, "--amount", "250", "--wait")
    lines = dict(line.split(" ", 1) for line in paid.splitlines())
    assert len(lines["bundle"]) == 81 and len(lines["tail"]) == 81
    assert lines["confirmed"].startswith("after")
    assert node.ok("getBalances", addresses=[jane])["balances"] == ["250"]
    found = node.ok("findTransactions", addresses=[jane], tags=[tag + "9" * 13])["hashes"]
    assert found == [lines["tail"]]

    balance = wallet("balance", *opts)
    assert "confirmed 750 iota" in balance
    for output in (funded, paid, balance):
        assert seed not in output


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        wallet_main(list(args))
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


def test_cli_errors(node: Node, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seed_file = tmp_path / "seed"
    wallet_main(["new-seed", "--seed-file", str(seed_file)])
    seed = seed_file.read_text().strip()
    code, out = run_in_process(capsys, "new-seed", "--seed-file", str(seed_file))
    assert code == 1 and "exists" in out and seed_file.read_text().strip() == seed

    opts = ["--node", node.url, "--seed-file", str(seed_file)]
    jane = "J" * 80 + "9"
    code, out = run_in_process(
        capsys, "pay", *opts, "--address", jane, "--tag", "CLI9TEST", "--amount", "5"
    )
    assert code == 1 and "5 needed" in out and seed not in out
    # PyOTA 2.1.0 would never finish finalising a bundle with this tag: refused up front.
    code, out = run_in_process(
        capsys, "pay", *opts, "--address", jane, "--tag", "X", "--amount", "0"
    )
    assert code == 1 and "loop forever" in out
    code, out = run_in_process(
        capsys, "pay", *opts, "--address", "ABC", "--tag", "CLI9TEST", "--amount", "1"
    )
    assert code == 1 and "81 trytes" in out
    code, out = run_in_process(capsys, "pay", *opts, "--order", "x")
    assert code == 1 and "--api" in out
    code, out = run_in_process(capsys, "pay", *opts, "--address", jane)
    assert code == 1 and "--amount" in out
    (tmp_path / "bad").write_text("not a seed")
    code, out = run_in_process(
        capsys, "balance", "--node", node.url, "--seed-file", str(tmp_path / "bad")
    )
    assert code == 1 and "81-tryte seed" in out
