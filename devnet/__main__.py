"""`iot-devnet` / `python -m devnet`: a local IOTA development tangle speaking IRI's HTTP API."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from devnet.api import create_app
from devnet.node import Node

log = logging.getLogger("devnet")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="iot-devnet", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=14265)
    p.add_argument(
        "--milestone-interval", type=float, default=2.0, help="seconds between milestones"
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="keep state here (journal.jsonl); else memory"
    )
    p.add_argument(
        "--min-weight-magnitude", type=int, default=1, help="PoW difficulty the node requires"
    )
    args = p.parse_args(argv)
    if args.milestone_interval <= 0:
        p.error("--milestone-interval must be > 0")
    if not 1 <= args.min_weight_magnitude <= 9:
        p.error("--min-weight-magnitude must be 1..9 (the PoW is pure Python)")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    node = Node(args.min_weight_magnitude, args.data_dir)
    stop = threading.Event()
    coordinator = threading.Thread(
        target=node.run_milestones, args=(args.milestone_interval, stop), daemon=True
    )
    coordinator.start()
    log.info(
        "devnet on http://%s:%d: milestone every %.2f s, mwm %d, faucet address %s, data %s",
        args.host,
        args.port,
        args.milestone_interval,
        args.min_weight_magnitude,
        node.faucet.address,
        args.data_dir or "(memory only)",
    )
    try:
        uvicorn.run(create_app(node), host=args.host, port=args.port, log_level="warning")
    finally:
        stop.set()
        coordinator.join(timeout=5)
        node.close()


if __name__ == "__main__":
    main()
