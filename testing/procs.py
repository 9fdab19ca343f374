"""Start, wait for, kill and restart the real processes the tests and benchmarks need.

The processes are configured as `make run` configures them (stack/ writes their files). Each
`Proc` writes its output to `<workdir>/<name>.log` and is stopped with SIGTERM (SIGKILL
after a grace period). Readiness is a TCP connect or an HTTP probe, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from broker_auth.broker.acl_model import Client, Role
from deploy.host import REPO_ROOT as REPO_ROOT
from deploy.host import find_binary as find_binary
from deploy.host import free_port as free_port
from deploy.host import http_ok as http_ok
from deploy.tls import TlsFiles
from stack import ferretdb as ferretdb_cmd
from stack import influxdb, mosquitto_conf
from testing.influx import Reader

T = TypeVar("T")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Harness set-up: call `check` until it is true; TimeoutError past `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """In a test: call `check` every `interval` s until it returns something truthy, and return
    that.

    `check` runs at least once. Past `timeout` s it raises AssertionError (a test failure, with
    `what` in the message) rather than returning a falsy value the caller could overlook.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """One real process: command line, environment, log file and readiness check."""

    name: str
    argv: Sequence[str]
    workdir: Path
    ready: Callable[[], bool] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 30.0
    popen: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> Proc:
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.popen = subprocess.Popen(
                list(self.argv),
                cwd=self.workdir,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        if self.ready is not None:
            try:
                wait_until(self._ready_or_dead, self.ready_timeout, f"{self.name} to be ready")
            except TimeoutError:
                self.stop()  # nobody else holds it yet: leave nothing running behind
                raise TimeoutError(f"{self.name} not ready; log:\n{self.tail()}") from None
            if not self.running():
                raise RuntimeError(f"{self.name} exited early; log:\n{self.tail()}")
        return self

    def _ready_or_dead(self) -> bool:
        return not self.running() or bool(self.ready and self.ready())

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)

    def kill(self) -> None:
        """SIGKILL the process group: no clean-up, as in a crash or power loss."""
        if self.popen is None:
            return
        self.signal(signal.SIGKILL)
        self.popen.wait(5)

    def restart(self) -> Proc:
        self.stop()
        return self.start()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass(frozen=True)
class MosquittoHandle:
    proc: Proc
    port: int
    tls_port: int
    ws_port: int
    tls: TlsFiles
    admin_password: str
    ingest_password: str


def mosquitto(
    workdir: Path,
    admin_password: str,
    ingest_password: str,
    extra_clients: Sequence[Client] = (),
    extra_roles: Sequence[Role] = (),
    ports: mosquitto_conf.MosquittoPorts | None = None,
) -> MosquittoHandle:
    """Mosquitto with the dynamic-security plugin, bootstrapped with the service accounts."""
    ports = ports or mosquitto_conf.MosquittoPorts(free_port(), free_port(), free_port())
    conf, tls = mosquitto_conf.prepare(
        workdir, admin_password, ingest_password, ports, extra_clients, extra_roles
    )
    proc = Proc(
        "mosquitto",
        [find_binary("mosquitto"), "-c", str(conf)],
        workdir,
        ready=lambda: port_open(ports.mqtt) and port_open(ports.tls) and port_open(ports.websocket),
    ).start()
    return MosquittoHandle(
        proc, ports.mqtt, ports.tls, ports.websocket, tls, admin_password, ingest_password
    )


@dataclass(frozen=True)
class InfluxHandle:
    """A provisioned InfluxDB: the services write with `writer_token`, tests read as admin."""

    proc: Proc
    port: int
    credentials: influxdb.Credentials

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def writer_env(self) -> dict[str, str]:
        """What a writing service needs (ingest, broker_auth; the averages' owner reads too)."""
        return {
            "INFLUX_URL": self.url,
            "INFLUX_TOKEN": self.credentials.writer_token,
            "INFLUX_READ_TOKEN": self.credentials.reader_token or "",
            "INFLUX_BUCKET": influxdb.DATABASE,
        }

    def reader(self) -> Reader:
        return Reader(self.url, self.credentials.admin_token)


def influx(workdir: Path, port: int | None = None) -> InfluxHandle:
    """InfluxDB 1.13 on loopback with auth, database `telemetry`, an admin and a writer."""
    port = port or free_port()
    credentials = influxdb.Credentials(
        secrets.token_urlsafe(18), secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    )
    config = influxdb.write_config(workdir / "data", port, free_port())
    url = f"http://127.0.0.1:{port}"
    proc = Proc(
        "influxdb",
        [find_binary("influxd"), "-config", str(config)],
        workdir,
        ready=lambda: influxdb.ping(url),
    ).start()
    influxdb.provision(url, credentials)
    return InfluxHandle(proc, port, credentials)


def ferretdb(workdir: Path, port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    proc = Proc(
        "ferretdb",
        ferretdb_cmd.argv(workdir / "data", port, free_port()),
        workdir,
        ready=lambda: port_open(port),
    ).start()
    return proc, port


def python_service(
    name: str,
    module: str,
    workdir: Path,
    env: Mapping[str, str],
    args: Sequence[str] = (),
    ready: Callable[[], bool] | None = None,
    ready_timeout: float = 30.0,
) -> Proc:
    """One of the project's own services (`python -m <module>`), not started yet."""
    return Proc(
        name,
        [sys.executable, "-m", module, *args],
        workdir,
        ready=ready,
        env={"PYTHONUNBUFFERED": "1", **env},
        ready_timeout=ready_timeout,
    )


IOTA_API_HEADERS = {"Content-Type": "application/json", "X-IOTA-API-Version": "1"}


def iota_node_info(url: str, timeout: float = 2.0) -> dict[str, object]:
    """`getNodeInfo` as a plain dict (raises OSError/ValueError when the node does not answer)."""
    request = urllib.request.Request(
        url, data=json.dumps({"command": "getNodeInfo"}).encode(), headers=IOTA_API_HEADERS
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        answer: dict[str, object] = json.loads(response.read())
    return answer


def iota_node_ready(url: str) -> bool:
    try:
        iota_node_info(url, timeout=1.0)
    except (OSError, ValueError):
        return False
    return True


def iota_node_synced(url: str) -> bool:
    """The node answers and a milestone has been solidified (it can confirm transfers)."""
    try:
        info = iota_node_info(url, timeout=1.0)
    except (OSError, ValueError):
        return False
    solid = int(str(info.get("latestSolidSubtangleMilestoneIndex", 0)))
    latest = int(str(info.get("latestMilestoneIndex", 0)))
    return bool(info.get("isSynced")) and solid >= 1 and solid >= latest


# The tests' and benchmarks' coordinator tree, built once (~6 s at depth 12: 4096 milestones,
# over an hour at 1 s) and shared by every devnet they start; local, never committed.
TEST_MERKLE_CACHE = REPO_ROOT / ".tools" / "devnet-test-coordinator"
TEST_MERKLE_DEPTH = 12


@dataclass
class Devnet:
    """A running Hornet private tangle and its faucet.

    `node` is the node whose API everything talks to. With `coordinator` (crash-safe mode) the
    milestones come from a second Hornet peered with it, so `node` may be killed like any
    process: it revalidates and synchronises again from its peer.
    """

    node: Proc
    faucet: Proc
    url: str
    faucet_url: str
    data_dir: Path
    coordinator: Proc | None = None
    zmq_url: str = ""  # the API node's event feed (Hornet's ZMQ plugin)

    @property
    def genesis_seed_file(self) -> Path:
        return self.data_dir / "genesis.seed"

    def stop(self) -> None:
        self.faucet.stop()
        self.node.stop()
        if self.coordinator is not None:
            self.coordinator.stop()


def _hornet(name: str, workdir: Path, args: list[str], url: str) -> Proc:
    return python_service(
        name,
        "devnet",
        workdir,
        env={},
        args=["node", *args],
        ready=lambda: iota_node_synced(url),
        ready_timeout=90,
    )


def devnet(
    workdir: Path,
    milestone_interval: int = 1,
    mwm: int = 5,
    merkle_depth: int = TEST_MERKLE_DEPTH,
    merkle_cache: Path | None = TEST_MERKLE_CACHE,
    crash_safe: bool = False,
) -> Devnet:
    """Hornet (`iot-devnet node`) and the faucet on free ports, state under `workdir/data`.

    `crash_safe`: a coordinator node under `workdir/coordinator` and the API node following it.
    """
    port, faucet_port, zmq_port = free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    feed = ["--zmq-port", str(zmq_port)]
    faucet_url = f"http://127.0.0.1:{faucet_port}"
    data = workdir / "data"
    coo_args = [
        "--milestone-interval",
        str(milestone_interval),
        "--mwm",
        str(mwm),
        "--merkle-depth",
        str(merkle_depth),
    ]
    if merkle_cache is not None:
        coo_args += ["--merkle-cache", str(merkle_cache)]
    coordinator: Proc | None = None
    started: list[Proc] = []
    try:
        if crash_safe:
            coo_port, coo_gossip, gossip = free_port(), free_port(), free_port()
            coo_data = workdir / "coordinator"
            coordinator = _hornet(
                "hornet-coordinator",
                workdir,
                [
                    "--data-dir",
                    str(coo_data),
                    "--port",
                    str(coo_port),
                    "--gossip-port",
                    str(coo_gossip),
                    "--peer",
                    f"127.0.0.1:{gossip}",
                    *coo_args,
                ],
                f"http://127.0.0.1:{coo_port}",
            ).start()
            started.append(coordinator)
            node = _hornet(
                "hornet",
                workdir,
                [
                    "--data-dir",
                    str(data),
                    "--port",
                    str(port),
                    "--gossip-port",
                    str(gossip),
                    "--peer",
                    f"127.0.0.1:{coo_gossip}",
                    "--follow",
                    str(coo_data),
                    "--mwm",
                    str(mwm),
                    *feed,
                ],
                url,
            ).start()
            genesis_dir = coo_data
        else:
            node = _hornet(
                "hornet",
                workdir,
                ["--data-dir", str(data), "--port", str(port), *feed, *coo_args],
                url,
            ).start()
            genesis_dir = data
        started.append(node)
        faucet = python_service(
            "faucet",
            "devnet",
            workdir,
            env={},
            args=[
                "faucet",
                "--data-dir",
                str(genesis_dir),
                "--port",
                str(faucet_port),
                "--node",
                url,
                "--mwm",
                str(mwm),
            ],
            ready=lambda: http_ok(f"{faucet_url}/healthz"),
        ).start()
    except Exception:
        for proc in reversed(started):
            proc.stop()
        raise
    zmq_url = f"tcp://127.0.0.1:{zmq_port}"
    return Devnet(node, faucet, url, faucet_url, genesis_dir, coordinator, zmq_url)
