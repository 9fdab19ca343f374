"""Start a real devnet node for tests of other components (import this, it is not a conftest).

    from tests.devnet_fixture import start_devnet

    @pytest.fixture(scope="module")
    def devnet(tmp_path_factory):
        proc, url = start_devnet(tmp_path_factory.mktemp("devnet"))
        yield url
        proc.stop()

The node listens on a free port, confirms every `milestone_interval` seconds, keeps its state
under `workdir/data` (so `proc.restart()` keeps balances) and logs to `workdir/devnet.log`.
Fund a seed with `wallet.payments.fund_from_faucet(url, seed, value)` and pay with
`wallet.payments.pay(url, seed, address, tag, amount)` (~1.5 s; confirmed at the next
milestone, see `wallet.payments.wait_confirmed`). If a test uses PyOTA's `send_transfer`
directly, call `devnet.speedups.install()` first: plain PyOTA 2.1.0 needs 8-15 s per transfer
for its pure-Python trit conversions (identical results, ~10x faster).
"""

from __future__ import annotations

from pathlib import Path

from stack import procs

API_HEADERS = procs.IOTA_API_HEADERS
node_info = procs.iota_node_info
node_ready = procs.iota_node_ready


def start_devnet(
    workdir: Path, milestone_interval: float = 0.5, min_weight_magnitude: int = 1
) -> tuple[procs.Proc, str]:
    """Start `python -m devnet` on a free port; return the running Proc and the node URL."""
    return procs.devnet(workdir, milestone_interval, min_weight_magnitude)
