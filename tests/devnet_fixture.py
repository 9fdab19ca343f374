"""A real devnet (Hornet + faucet) for tests of other components (import this; not a conftest).

    from tests.devnet_fixture import start_devnet

    @pytest.fixture(scope="module")
    def devnet(tmp_path_factory):
        net = start_devnet(tmp_path_factory.mktemp("devnet"))
        yield net            # net.url (node API), net.faucet_url, net.node / net.faucet (Procs)
        net.stop()

Hornet listens on a free port with its own coordinator (milestones every `milestone_interval`
whole seconds), keeps its ledger under `workdir/data` (so `net.node.restart()` keeps balances)
and logs to `workdir/hornet.log`; the faucet logs to `workdir/faucet.log`. Fund a seed with
`wallet.payments.fund_from_faucet(net.faucet_url, net.url, seed, value)` and pay with
`wallet.payments.pay(net.url, seed, address, tag, amount)`; PyOTA must be told the node's
minimum weight magnitude (`IOTA_MWM`, set for the whole test session in tests/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

from iota.crypto.types import Seed

from testing import procs
from wallet import payments

API_HEADERS = procs.IOTA_API_HEADERS
node_info = procs.iota_node_info
node_ready = procs.iota_node_ready
TEST_MWM = 5


def start_devnet(
    workdir: Path, milestone_interval: int = 1, crash_safe: bool = False
) -> procs.Devnet:
    """Hornet and the faucet on free ports; the running Devnet.

    `crash_safe`: a separate coordinator node, so `net.node` may be SIGKILLed and restarted.
    """
    return procs.devnet(workdir, milestone_interval, mwm=TEST_MWM, crash_safe=crash_safe)


def pay_from_fresh_seed(
    net: procs.Devnet, address: str, tag: str, amount: int
) -> payments.PaymentResult:
    """Pay `amount` to `address` from a new seed the faucet funds with exactly that much."""
    seed = Seed.random()
    payments.fund_from_faucet(net.faucet_url, net.url, seed, amount)
    return payments.pay(net.url, seed, address, tag, amount)
