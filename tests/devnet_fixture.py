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

import json
import urllib.request
from pathlib import Path

from stack import procs

API_HEADERS = {"Content-Type": "application/json", "X-IOTA-API-Version": "1"}


def node_info(url: str, timeout: float = 2.0) -> dict[str, object]:
    """`getNodeInfo` as a plain dict (raises OSError/ValueError when the node does not answer)."""
    request = urllib.request.Request(
        url, data=json.dumps({"command": "getNodeInfo"}).encode(), headers=API_HEADERS
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def node_ready(url: str) -> bool:
    try:
        node_info(url, timeout=1.0)
    except (OSError, ValueError):
        return False
    return True


def start_devnet(
    workdir: Path, milestone_interval: float = 0.5, min_weight_magnitude: int = 1
) -> tuple[procs.Proc, str]:
    """Start `python -m devnet` on a free port; return the running Proc and the node URL."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    proc = procs.python_service(
        "devnet",
        "devnet",
        workdir,
        env={},
        args=[
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--milestone-interval",
            str(milestone_interval),
            "--min-weight-magnitude",
            str(min_weight_magnitude),
            "--data-dir",
            str(workdir / "data"),
        ],
        ready=lambda: node_ready(url),
    )
    proc.start()
    return proc, url
