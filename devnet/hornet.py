"""Hornet 0.5.6 as a one-node private tangle: genesis, coordinator and configuration.

`prepare(data_dir, ...)` lays out everything Hornet needs in `data_dir` and returns the command
line that starts it:
- `genesis.seed` (0600): a random seed whose first address (security level 2) holds the whole
  supply in `snapshot.csv`, the global snapshot; the faucet spends from it;
- `coordinator.seed` (0600) and its Merkle tree `coordinator.tree` (built once with
  `hornet tool merkle`; 2**depth milestones), whose root is the coordinator address;
- `config.json`, `peering.json` (no peers) and `profiles.json`, with every plugin and default
  that would reach outside the machine turned off and every listener on loopback.
The first start bootstraps the coordinator (`--cooBootstrap`); later starts resume from
`coordinator.state` and the database, so a killed node comes back with its ledger.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from broker_auth.ledger import ternary
from deploy.host import REPO_ROOT, find_binary

SECURITY_LEVEL = 2
# Every command the project's code and PyOTA send; loopback callers are limited like others.
API_COMMANDS = [
    "getNodeInfo",
    "getNodeAPIConfiguration",
    "getBalances",
    "checkConsistency",
    "getTipInfo",
    "getTransactionsToApprove",
    "attachToTangle",
    "interruptAttachingToTangle",
    "getInclusionStates",
    "wereAddressesSpentFrom",
    "broadcastTransactions",
    "storeTransactions",
    "findTransactions",
    "getTrytes",
]
DISABLED_PLUGINS = ["Autopeering", "CLI", "Dashboard", "WarpSync", "Profiling", "Spammer"]
# The last trit of a coordinator seed must be zero ("each 243rd trit must be zero").
# Hornet's own profiles.json, copied from its module by scripts/bootstrap.sh (the image: env).
DEFAULT_PROFILES = REPO_ROOT / ".tools" / "hornet" / "profiles.json"
_ROOT_RE = re.compile(r"Merkle tree root: ([9A-Z]{81})")


@dataclass(frozen=True)
class Ports:
    api: int
    gossip: int
    autopeering: int
    zmq: int
    mqtt: int
    prometheus: int
    profiling: int
    dashboard: int
    api_host: str = "127.0.0.1"  # every other listener but the event feed stays on loopback
    zmq_host: str = "127.0.0.1"  # 0.0.0.0 in a container: broker_auth runs in another one


@dataclass(frozen=True)
class Layout:
    """What `prepare` made: the command to run and the genesis of this tangle."""

    argv: list[str]
    env: dict[str, str]
    genesis_seed_file: Path
    genesis_address: str
    coordinator_address: str


def _random_trytes(count: int) -> str:
    return "".join(secrets.choice(ternary.ALPHABET) for _ in range(count))


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


def _read_or_create_seed(path: Path, last_trytes: str = ternary.ALPHABET) -> str:
    if not path.exists():
        _write_secret(path, _random_trytes(80) + secrets.choice(last_trytes))
    seed = path.read_text().strip()
    if not ternary.is_trytes(seed, 81):
        raise ValueError(f"{path} does not hold an 81-tryte seed")
    return seed


def genesis_address(seed: str) -> str:
    from iota.crypto.addresses import AddressGenerator
    from iota.crypto.types import Seed

    from broker_auth.ledger import speedups

    speedups.install()
    return str(AddressGenerator(Seed(seed.encode()), SECURITY_LEVEL).get_addresses(0, 1)[0])


def config(
    ports: Ports,
    coordinator_address: str,
    depth: int,
    interval_s: int,
    mwm: int,
    runs_coordinator: bool = True,
) -> dict[str, object]:
    loopback = "127.0.0.1"
    disabled = DISABLED_PLUGINS if runs_coordinator else [*DISABLED_PLUGINS, "Coordinator"]
    disabled = [p for p in disabled if runs_coordinator or p != "WarpSync"]
    return {
        # Our own cache profile (profiles.json): objects are written through to the database
        # at once, so a killed node restarts with every milestone its coordinator issued.
        "useProfile": "custom",
        "httpAPI": {
            "bindAddress": f"{ports.api_host}:{ports.api}",
            "permitRemoteAccess": API_COMMANDS,
            "permittedRoutes": ["healthz"],
            "whitelistedAddresses": [],
            "basicAuth": {"enabled": False},
            "limits": {
                "bodyLengthBytes": 1_000_000,
                "findTransactions": 1000,
                "getTrytes": 1000,
                "requestsList": 1000,
            },
        },
        # debug: skip the revalidation after an unclean shutdown, which rolls the ledger back and
        # marks the database tainted for the coordinator (a one-node tangle has no peer to
        # resynchronise from); with write-through caches the database is complete anyway.
        # (A follower keeps the revalidation: it synchronises again from its peer.)
        "db": {"path": "mainnetdb", "debug": runs_coordinator},
        "snapshots": {
            "loadType": "global",
            "global": {"path": "snapshot.csv", "spentAddressesPaths": [], "index": 0},
            "local": {
                "path": "snapshots/export.bin",
                "downloadURLs": [],
                "intervalSynced": 50,
                "intervalUnsynced": 1000,
            },
            "pruning": {"enabled": False},
        },
        "spentAddresses": {"enabled": True},
        "coordinator": {
            "address": coordinator_address,
            "securityLevel": SECURITY_LEVEL,
            "merkleTreeDepth": depth,
            "mwm": mwm,
            "intervalSeconds": interval_s,
            "stateFilePath": "coordinator.state",
            "merkleTreeFilePath": "coordinator.tree",
        },
        "network": {
            "preferIPv6": False,
            "gossip": {"bindAddress": f"{loopback}:{ports.gossip}"},
            "autopeering": {
                "bindAddress": f"{loopback}:{ports.autopeering}",
                "entryNodes": [],
                "runAsEntryNode": False,
            },
        },
        "node": {
            "disablePlugins": disabled,
            # ZMQ: the event feed broker_auth's watcher listens to (new solid milestones).
            # Prometheus: the node's metrics (sync, milestones, tips) for the seller's alerts.
            "enablePlugins": (
                ["Coordinator", "ZMQ", "Prometheus"] if runs_coordinator else ["ZMQ", "Prometheus"]
            ),
        },
        "logger": {"level": "info", "disableCaller": True, "encoding": "console"},
        "zmq": {"bindAddress": f"{ports.zmq_host}:{ports.zmq}"},
        "mqtt": {"config": "mqtt_config.json"},
        "prometheus": {"bindAddress": f"{ports.zmq_host}:{ports.prometheus}"},
        "profiling": {"bindAddress": f"{loopback}:{ports.profiling}"},
        "dashboard": {"bindAddress": f"{loopback}:{ports.dashboard}"},
    }


def write_through_profile() -> dict[str, object]:
    """Hornet's `custom` profile (from its profiles.json) with every cache time set to 0."""
    shipped = json.loads(Path(os.environ.get("HORNET_PROFILES", DEFAULT_PROFILES)).read_text())
    caches = shipped["custom"]["caches"]
    for name, cache in caches.items():
        if name != "incomingTransactionFilter":  # a dedup filter, not stored data
            cache["cacheTimeMs"] = 0
    return {"custom": {"caches": caches}}


def build_merkle_tree(workdir: Path, seed: str, depth: int, tree: str) -> str:
    """`hornet tool merkle` into workdir/<tree>; returns its root (the coordinator address)."""
    (workdir / "config.json").write_text(
        json.dumps(
            {
                "coordinator": {
                    "securityLevel": SECURITY_LEVEL,
                    "merkleTreeDepth": depth,
                    "merkleTreeFilePath": tree,
                }
            }
        )
    )
    done = subprocess.run(
        [find_binary("hornet"), "tool", "merkle"],
        cwd=workdir,
        env={**os.environ, "COO_SEED": seed},
        capture_output=True,
        text=True,
        check=False,
    )
    found = _ROOT_RE.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"hornet tool merkle failed:\n{done.stdout}\n{done.stderr}")
    return found.group(1)


def prepare_follower(
    data_dir: Path, ports: Ports, coordinator_dir: Path, peers: list[str], mwm: int
) -> Layout:
    """A second node of the tangle laid out by `prepare(coordinator_dir)`, without coordinator.

    It gossips with `peers` (the coordinator node) and so survives being killed: Hornet then
    revalidates its database and synchronises again from its peer, as any node of a network.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(coordinator_dir / "snapshot.csv", data_dir / "snapshot.csv")
    coordinator = json.loads((coordinator_dir / "config.json").read_text())["coordinator"]
    settings = config(
        ports,
        coordinator["address"],
        coordinator["merkleTreeDepth"],
        coordinator["intervalSeconds"],
        mwm,
        runs_coordinator=False,
    )
    _write_configuration(data_dir, settings, ports, peers)
    genesis = (data_dir / "snapshot.csv").read_text().split(";")[0]
    return Layout(
        [find_binary("hornet"), "--config-dir", str(data_dir)],
        {},
        coordinator_dir / "genesis.seed",
        genesis,
        str(coordinator["address"]),
    )


def _write_configuration(
    data_dir: Path, settings: dict[str, object], ports: Ports, peers: list[str]
) -> None:
    (data_dir / "config.json").write_text(json.dumps(settings, indent=2))
    peering = [
        {"identity": p, "alias": f"peer-{i}", "preferIPv6": False} for i, p in enumerate(peers)
    ]
    (data_dir / "peering.json").write_text(
        json.dumps({"acceptAnyConnection": False, "maxPeers": len(peers), "peers": peering})
    )
    (data_dir / "mqtt_config.json").write_text(
        json.dumps({"port": ports.mqtt, "host": "127.0.0.1"})
    )
    (data_dir / "profiles.json").write_text(json.dumps(write_through_profile()))


def prepare(
    data_dir: Path,
    ports: Ports,
    milestone_interval_s: int,
    mwm: int,
    merkle_depth: int,
    merkle_cache: Path | None = None,
    peers: list[str] | None = None,
) -> Layout:
    """Lay out a private tangle in `data_dir` (kept across restarts) and return how to run it.

    `merkle_cache`, when given, is a directory holding a coordinator seed, tree and root that
    several nodes may share (the tests start many tangles; each tree takes seconds to build).
    """
    if milestone_interval_s < 1:
        raise ValueError("Hornet issues milestones every whole second at most: interval >= 1")
    data_dir.mkdir(parents=True, exist_ok=True)
    genesis_seed_file = data_dir / "genesis.seed"
    genesis = _read_or_create_seed(genesis_seed_file)
    snapshot = data_dir / "snapshot.csv"
    if not snapshot.exists():
        snapshot.write_text(f"{genesis_address(genesis)};{ternary.SUPPLY}\n")
    genesis_addr = snapshot.read_text().split(";")[0]
    coo_dir = merkle_cache or data_dir
    # One tree per depth in a shared cache; a node's own directory holds the one it uses.
    tree = f"coordinator-{merkle_depth}.tree" if merkle_cache else "coordinator.tree"
    root_file = coo_dir / f"coordinator-{merkle_depth}.root"
    if not (root_file.exists() and (coo_dir / tree).exists()):
        coo_dir.mkdir(parents=True, exist_ok=True)
        coo_seed = _read_or_create_seed(coo_dir / "coordinator.seed", ternary.ZERO_LAST_TRIT)
        (coo_dir / tree).unlink(missing_ok=True)
        root_file.write_text(build_merkle_tree(coo_dir, coo_seed, merkle_depth, tree) + "\n")
    coo_address = root_file.read_text().strip()
    coo_seed = (coo_dir / "coordinator.seed").read_text().strip()
    if merkle_cache and not (data_dir / "coordinator.tree").exists():
        shutil.copyfile(coo_dir / tree, data_dir / "coordinator.tree")
    settings = config(ports, coo_address, merkle_depth, milestone_interval_s, mwm)
    _write_configuration(data_dir, settings, ports, peers or [])
    argv = [find_binary("hornet"), "--config-dir", str(data_dir)]
    if not (data_dir / "coordinator.state").exists():
        argv.append("--cooBootstrap")
    # The Coordinator plugin reads its seed from the environment, never from a command line.
    return Layout(argv, {"COO_SEED": coo_seed}, genesis_seed_file, genesis_addr, coo_address)
