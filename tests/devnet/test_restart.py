"""A node with --data-dir keeps balances, transactions and confirmation states across a crash."""

from __future__ import annotations

from typing import Any

from iota import Bundle, Iota, TransactionHash

from tests.devnet.conftest import Devnet, DevnetFactory
from wallet import payments

TAG = "RESTART9TEST"


def snapshot(node: Devnet, addresses: list[str], tails: list[str]) -> dict[str, Any]:
    return {
        "balances": node.ok("getBalances", addresses=addresses)["balances"],
        "found": node.ok("findTransactions", addresses=addresses)["hashes"],
        "tagged": node.ok("findTransactions", tags=[TAG])["hashes"],
        "trytes": node.ok("getTrytes", hashes=tails)["trytes"],
        "spent": node.ok("wereAddressesSpentFrom", addresses=addresses)["states"],
        "included": node.ok("getInclusionStates", transactions=tails, tips=[])["states"],
    }


def test_restart_after_kill_keeps_state(devnet_factory: DevnetFactory) -> None:
    node = devnet_factory("devnet-restart", milestone_interval=0.5)
    seed = "".join("ABC"[i % 3] for i in range(81))
    funded = payments.fund_from_faucet(node.url, seed, 1000)
    paid = payments.pay(node.url, seed, funded.address, TAG, 0)  # zero-value bundle
    jane = payments.next_address(node.url, "J" * 81)
    sent = payments.pay(node.url, seed, jane, TAG, 400)
    payments.wait_confirmed(node.url, sent.tail_hash, timeout=10)
    # A reattachment that must stay unconfirmed after the restart too.
    api = Iota(node.url)
    replay = Bundle.from_tryte_strings(
        api.replay_bundle(TransactionHash(sent.tail_hash), depth=3, min_weight_magnitude=1)[
            "trytes"
        ]
    ).tail_transaction.hash
    node.wait_milestones(2)

    state = payments.scan_seed(node.url, seed)
    addresses = [str(a) for a in state.used] + [jane]
    tails = [funded.tail_hash, paid.tail_hash, sent.tail_hash, str(replay)]
    before = snapshot(node, addresses, tails)
    assert before["balances"] == ["0", "600", "400"]
    assert before["included"] == [True, True, True, False]
    index = node.milestone_index()

    node.proc.kill()  # SIGKILL: no clean shutdown
    node.proc.start()

    assert snapshot(node, addresses, tails) == before
    assert node.milestone_index() >= index
    # The ledger goes on from there: the change pays again.
    again = payments.pay(node.url, seed, jane, TAG, 100)
    payments.wait_confirmed(node.url, again.tail_hash, timeout=10)
    assert node.ok("getBalances", addresses=[jane])["balances"] == ["500"]
    journal = node.journal()
    assert any("m" in r for r in journal) and any("s" in r for r in journal)
