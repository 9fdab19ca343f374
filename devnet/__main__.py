"""`iot-devnet`: the local IOTA tangle (Hornet 0.5.6, one node, own coordinator) and its faucet.

    iot-devnet node   --data-dir .data/devnet --port 14265 --milestone-interval 2
    iot-devnet faucet --data-dir .data/devnet --port 14266 --node http://127.0.0.1:14265

`node` prepares the data directory (genesis, coordinator tree, configuration; see
devnet/hornet.py) and runs Hornet, forwarding SIGTERM/SIGINT to it. A killed coordinator
node may have written its state file for a milestone its database never got: Hornet then
refuses to start ("previous milestone does not match latest milestone in database"), and the
wrapper re-bootstraps the coordinator from the database's latest milestone (Hornet's own
`--cooBootstrap --cooStartIndex`), which loses nothing the database holds.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from deploy.host import forward_signals, free_port

DEFAULT_MWM = int(os.environ.get("IOTA_MWM", "5"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="iot-devnet", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run the Hornet node (prepares its data dir first)")
    node.add_argument("--data-dir", type=Path, required=True)
    node.add_argument("--port", type=int, default=14265, help="node API port")
    node.add_argument(
        "--api-host", default="127.0.0.1", help="node API address (0.0.0.0 in a container)"
    )
    node.add_argument(
        "--milestone-interval",
        type=int,
        default=int(os.environ.get("DEVNET_MILESTONE_INTERVAL", "2")),
        help="whole seconds between milestones ($DEVNET_MILESTONE_INTERVAL)",
    )
    node.add_argument("--mwm", type=int, default=DEFAULT_MWM, help="PoW weight ($IOTA_MWM)")
    node.add_argument(
        "--merkle-depth",
        type=int,
        default=int(os.environ.get("DEVNET_MERKLE_DEPTH", "16")),
        help="coordinator tree depth: 2**depth milestones ($DEVNET_MERKLE_DEPTH)",
    )
    node.add_argument(
        "--merkle-cache", type=Path, default=None, help="share one coordinator tree from here"
    )
    node.add_argument("--gossip-port", type=int, default=0, help="gossip port (0: any free one)")
    node.add_argument(
        "--zmq-port",
        type=int,
        default=int(os.environ.get("DEVNET_ZMQ_PORT", "0")),
        help="the ZMQ event feed's port ($DEVNET_ZMQ_PORT; 0: any free one)",
    )
    node.add_argument(
        "--zmq-host", default="127.0.0.1", help="event feed address (0.0.0.0 in a container)"
    )
    node.add_argument(
        "--prometheus-port",
        type=int,
        default=0,
        help="Hornet's Prometheus metrics (/metrics; on --zmq-host); 0: any free port",
    )
    node.add_argument("--peer", action="append", default=[], help="HOST:PORT of a peer's gossip")
    node.add_argument(
        "--follow",
        type=Path,
        default=None,
        help="run without coordinator, as a second node of the tangle prepared in this data dir",
    )
    faucet = sub.add_parser("faucet", help="run the faucet (POST /faucet)")
    faucet.add_argument("--data-dir", type=Path, required=True, help="holds genesis.seed")
    faucet.add_argument("--host", default="127.0.0.1")
    faucet.add_argument("--port", type=int, default=14266)
    faucet.add_argument("--node", default="http://127.0.0.1:14265")
    faucet.add_argument("--mwm", type=int, default=DEFAULT_MWM, help="PoW weight ($IOTA_MWM)")
    args = p.parse_args(argv)
    if args.command == "node" and args.milestone_interval < 1:
        p.error("--milestone-interval is whole seconds, at least 1 (Hornet's coordinator)")
    if args.command == "node" and not 4 <= args.merkle_depth <= 24:
        p.error("--merkle-depth must be 4..24")
    return args


def run_node(args: argparse.Namespace) -> None:
    from devnet import hornet

    mqtt, profiling, dashboard, autopeering = (free_port() for _ in range(4))
    prometheus = args.prometheus_port or free_port()
    ports = hornet.Ports(
        api=args.port,
        gossip=args.gossip_port or free_port(),
        autopeering=autopeering,
        zmq=args.zmq_port or free_port(),
        mqtt=mqtt,
        prometheus=prometheus,
        profiling=profiling,
        dashboard=dashboard,
        api_host=args.api_host,
        zmq_host=args.zmq_host,
    )
    if args.follow is not None:
        layout = hornet.prepare_follower(args.data_dir, ports, args.follow, args.peer, args.mwm)
    else:
        layout = hornet.prepare(
            args.data_dir,
            ports,
            args.milestone_interval,
            args.mwm,
            args.merkle_depth,
            args.merkle_cache,
            args.peer,
        )
    print(
        f"devnet: Hornet on http://127.0.0.1:{args.port} (event feed tcp://127.0.0.1:{ports.zmq}),"
        f" milestone every"
        f" {args.milestone_interval} s, mwm {args.mwm}, {2**args.merkle_depth} milestones in"
        f" the coordinator tree, genesis {layout.genesis_address}",
        flush=True,
    )
    env = {**os.environ, **layout.env}
    code, mismatch = _run_hornet(layout.argv, env, args.data_dir)
    if mismatch is not None:
        state = args.data_dir / "coordinator.state"
        print(
            f"devnet: coordinator state ahead of the database (milestone {mismatch}):"
            f" bootstrapping again from milestone {mismatch + 1}",
            flush=True,
        )
        state.unlink(missing_ok=True)
        argv = [a for a in layout.argv if a != "--cooBootstrap"]
        argv += ["--cooBootstrap", f"--cooStartIndex={mismatch + 1}"]
        code, _ = _run_hornet(argv, env, args.data_dir)
    raise SystemExit(code)


_MISMATCH = re.compile(
    rb"previous milestone does not match latest milestone in database\. "
    rb"previous: \d+, database: (\d+)"
)


def _run_hornet(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, int | None]:
    """Run Hornet to its end, echoing its output; (exit code, database milestone on mismatch)."""
    child = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    forward_signals(child)
    mismatch: int | None = None
    assert child.stdout is not None
    for line in child.stdout:
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        found = _MISMATCH.search(line)
        if found:
            mismatch = int(found.group(1))
    return child.wait(), mismatch


def run_faucet(args: argparse.Namespace) -> None:
    import uvicorn

    from devnet.faucet import Faucet, create_app

    faucet = Faucet(args.node, args.data_dir / "genesis.seed", args.mwm)
    faucet.start()
    try:
        uvicorn.run(create_app(faucet), host=args.host, port=args.port, log_level="warning")
    finally:
        faucet.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "node":
        run_node(args)
    else:
        run_faucet(args)


if __name__ == "__main__":
    main()
