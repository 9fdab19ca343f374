"""Shared pieces of the access, acl and soak benchmarks.

- the stack on free ports in a temporary directory (Mosquitto with dynamic security, FerretDB,
  InfluxDB, the devnet (Hornet + faucet), broker_auth with a pool of deposit addresses,
  optionally the ingest worker and `iot-sim`);
- IOTA payments with the wallet's cost moved out of the measured window: addresses are generated
  and funded (faucet) before, bundles are signed just before sending, and only `send_trytes`
  (attach + broadcast) is timed;
- when Hornet confirmed a bundle, asked of the node every 20 ms (ConfirmationClock);
- live-access probing as a buyer does it (fresh MQTT connection, SUBSCRIBE, every ~20 ms);
- per-process CPU and memory from /proc, and the machine's load average.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import math
import os
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iota import Address, Iota, ProposedTransaction, Tag, Transaction, TransactionHash
from iota.crypto.addresses import AddressGenerator
from iota.crypto.types import Seed

from bench.common import percentile
from broker_auth.broker.acl_model import Acl, Client, Role
from broker_auth.ledger import speedups
from stack.mqtt_probe import MqttProbe
from testing import procs
from testing.broker_auth import AuthStack, start_auth_stack, start_replica
from testing.scrape import scrape_metrics
from wallet import payments

# Where a transaction's bundle hash sits in its 2673 trytes (after signature, address, value,
# obsolete tag, timestamp, current and last index).
BUNDLE_TRYTES = slice(2349, 2430)
PUBLISHER = "bench.publisher"
BUYER_PASSWORD = "bench-buyer-password-1"
BENCH_MWM = 5  # the devnet's; Hornet refuses any other
os.environ.setdefault("IOTA_MWM", str(BENCH_MWM))


# ---------------------------------------------------------------- small helpers


def rounded(value: float, digits: int = 3) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def spread(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """n, p50, p90, p99, max and mean of a sample (nearest rank)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": rounded(percentile(values, 50), digits),
        "p90": rounded(percentile(values, 90), digits),
        "p99": rounded(percentile(values, 99), digits),
        "max": rounded(max(values), digits),
        "mean": rounded(sum(values) / len(values), digits),
    }


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def publisher_role() -> Role:
    """One MQTT connection publishing for many simulated devices needs all their topics."""
    return Role("bench-publisher", (Acl("publishClientSend", "live/#"),), "benchmark publisher")


def publisher_client(password: str) -> Client:
    return Client(PUBLISHER, password, ("bench-publisher",))


class Periodic:
    """Call `fn` every `interval` seconds in a daemon thread until `stop()` (errors counted):
    at once, or one interval after `start()` with `first_at_once=False`."""

    def __init__(
        self, interval: float, fn: Callable[[], None], name: str, first_at_once: bool = True
    ) -> None:
        self.interval = interval
        self.fn = fn
        self.first_at_once = first_at_once
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        if not self.first_at_once:
            next_at += self.interval
            self._stop.wait(self.interval)
        while not self._stop.is_set():
            try:
                self.fn()
            except Exception:  # a sampler must outlive a slow or failed read
                self.errors += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class LoadMonitor:
    """The machine's 1-minute load average, sampled every few seconds during a benchmark."""

    def __init__(self, interval: float = 5.0) -> None:
        self.at_start = os.getloadavg()
        self.cpu_start = machine_cpu_times()
        self.samples: list[float] = []
        self._periodic = Periodic(interval, lambda: self.samples.append(os.getloadavg()[0]), "load")

    def start(self) -> LoadMonitor:
        self._periodic.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._periodic.stop()
        samples = self.samples or [os.getloadavg()[0]]
        busy, total = (b - a for a, b in zip(self.cpu_start, machine_cpu_times(), strict=True))
        return {
            "machine_cpu_busy_pct": round(100 * busy / total, 1) if total else None,
            "cpus": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in self.at_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "load1_mean": round(sum(samples) / len(samples), 2),
            "load1_max": round(max(samples), 2),
        }


def machine_cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def proc_memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a wrapper's children: `iot-devnet node` runs Hornet)."""
    found = [pid]
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        for child in children:
            with contextlib.suppress(OSError):
                found += process_tree(child)
    return found


def tree_memory_and_cpu(pid: int) -> tuple[int, int, float]:
    """RSS and peak RSS (kB, summed) and CPU seconds of a process and its descendants."""
    rss = hwm = 0
    cpu = 0.0
    for member in process_tree(pid):
        try:
            mem = proc_memory_kb(member)
            cpu += proc_cpu_seconds(member)
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        rss += mem.get("VmRSS", 0)
        hwm += mem.get("VmHWM", 0)
    return rss, hwm, cpu


def pid_of(proc: procs.Proc) -> int:
    assert proc.popen is not None, f"{proc.name} was never started"
    return proc.popen.pid


# ---------------------------------------------------------------- devnet


class ConfirmationClock:
    """When the node first reports each sent bundle confirmed (getInclusionStates every 20 ms).

    Hornet keeps no journal to read afterwards: this thread asks the node itself, far more often
    than the watcher does (0.5 s), so a latency measured from it is at most ~20 ms flattered.
    """

    def __init__(self, node_url: str, interval_s: float = 0.02) -> None:
        self.api = Iota(node_url)
        self.interval_s = interval_s
        self.confirmed: dict[str, float] = {}  # bundle hash -> wall time
        self._pending: dict[str, str] = {}  # tail hash -> bundle hash
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="confirmation-clock", daemon=True)
        self._thread.start()

    def watch(self, bundle_hash: str, tail_hash: str) -> None:
        with self._lock:
            self._pending[tail_hash] = bundle_hash

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                tails = list(self._pending)
            if not tails:
                continue
            try:
                states = self.api.get_latest_inclusion([TransactionHash(t.encode()) for t in tails])
            except Exception:  # the node is busy or restarting: ask again
                continue
            now = time.time()
            with self._lock:
                for tail, ok in states["states"].items():
                    bundle = self._pending.get(str(tail))
                    if ok and bundle is not None:
                        self.confirmed.setdefault(bundle, now)
                        del self._pending[str(tail)]

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        return dict(self.confirmed)


# ---------------------------------------------------------------- payments


@dataclass(frozen=True)
class Signed:
    trytes: list[Any]
    bundle_hash: str
    signing_s: float


class Wallet:
    """One seed whose addresses are funded before a benchmark, each to pay exactly one order.

    Each funded address holds exactly the order's amount, so a payment needs no change address
    (no extra address generation) and spends nothing another payment needs: payments are
    independent and may run in parallel.
    """

    def __init__(self, net: procs.Devnet) -> None:
        speedups.install()  # the wallet's own PyOTA speed-ups, as iot-wallet uses them
        self.node_url = net.url
        self.faucet_url = net.faucet_url
        node_url = net.url
        self.seed = Seed.random()
        self.mwm = payments.node_min_weight_magnitude(node_url)
        self._next_index = 0
        self._lock = threading.Lock()

    def fund(self, values: Sequence[int]) -> list[Address]:
        with self._lock:
            start, self._next_index = self._next_index, self._next_index + len(values)
        generator = AddressGenerator(self.seed, payments.SECURITY_LEVEL, checksum=False)
        addresses: list[Address] = generator.get_addresses(start, len(values))

        def credit(pair: tuple[Address, int]) -> None:
            body = json.dumps({"address": str(pair[0]), "value": pair[1]}).encode()
            request = urllib.request.Request(
                self.faucet_url + "/faucet", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=120) as r:
                json.loads(r.read())
            pair[0].balance = pair[1]

        # Concurrent requests: the faucet sends up to 50 together, one bundle per milestone.
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            list(pool.map(credit, zip(addresses, values, strict=True)))
        return addresses

    def sign(self, source: Address, to: str, tag: str, amount: int) -> Signed:
        if amount != source.balance:
            raise ValueError(f"address holds {source.balance}, the order wants {amount}")
        started = time.monotonic()
        answer = Iota(self.node_url, self.seed).prepare_transfer(
            transfers=[
                ProposedTransaction(
                    address=Address(to.encode()), value=amount, tag=Tag(tag.encode())
                )
            ],
            inputs=[source],
        )
        trytes = list(answer["trytes"])
        return Signed(trytes, str(trytes[0])[BUNDLE_TRYTES], time.monotonic() - started)

    def send(self, signed: Signed) -> str:
        """Attach (the node does the PoW), store and broadcast; returns the tail hash."""
        attached = Iota(self.node_url).send_trytes(
            signed.trytes, depth=payments.DEPTH, min_weight_magnitude=self.mwm
        )
        txs = [Transaction.from_tryte_string(t) for t in attached["trytes"]]
        return str(next(t.hash for t in txs if t.current_index == 0))


# ---------------------------------------------------------------- live access


def first_live_message(probe: MqttProbe, timeout: float = 5.0) -> float | None:
    """Wall time the first (non-retained) live reading arrived at the probe."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = probe.next_message(max(0.0, deadline - time.monotonic()))
        if msg is not None and msg.topic.startswith("live/") and not msg.retain:
            return time.time() - (time.monotonic() - msg.received_at)
    return None


# ---------------------------------------------------------------- the stack


@dataclass
class Stack:
    workdir: Path
    broker: procs.MosquittoHandle
    ferret: procs.Proc
    store: procs.InfluxHandle
    devnet: procs.Devnet
    auth: AuthStack
    demo_password: str
    publisher_password: str
    replicas: list[AuthStack] = field(default_factory=list)  # beside `auth`, same broker and DB
    ingest: list[procs.Proc] = field(default_factory=list)  # the workers
    ingest_metrics_ports: list[int] = field(default_factory=list)
    averager: procs.Proc | None = None  # with several workers
    extra: list[procs.Proc] = field(default_factory=list)

    def processes(self) -> dict[str, procs.Proc]:
        """Every process of the stack by a unique name (a killed one keeps its name)."""
        found = {
            "mosquitto": self.broker.proc,
            "hornet": self.devnet.node,
            "faucet": self.devnet.faucet,
            "ferretdb": self.ferret,
            "influxdb": self.store.proc,
        }
        if self.devnet.coordinator is not None:
            found["hornet-coordinator"] = self.devnet.coordinator
        for i, auth in enumerate([self.auth, *self.replicas]):
            found[f"broker_auth-{i}" if self.replicas else "broker_auth"] = auth.proc
        for i, worker in enumerate(self.ingest):
            found[f"ingest-{i}" if len(self.ingest) > 1 else "ingest"] = worker
        if self.averager is not None:
            found["averager"] = self.averager
        for proc in self.extra:
            found[proc.name] = proc
        return found

    def ingest_metrics(self) -> dict[str, float]:
        """The workers' metrics, summed (a worker that does not answer counts nothing)."""
        total: dict[str, float] = {}
        for port in self.ingest_metrics_ports:
            try:
                metrics = scrape_metrics(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                continue
            for name, value in metrics.items():
                total[name] = total.get(name, 0.0) + value
        return total

    def simulator(self, name: str, username: str, password: str, args: Iterable[str]) -> procs.Proc:
        """`iot-sim` as its own process (its own core share, no GIL shared with the probes)."""
        proc = procs.python_service(
            name,
            "simulator",
            self.workdir / name,
            env={"SIM_USERNAME": username, "SIM_PASSWORD": password},
            args=["--port", str(self.broker.port), *args],
        )
        self.extra.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(list(self.processes().values())):
            with contextlib.suppress(Exception):
                proc.stop()


def start_stack(
    workdir: Path,
    *,
    milestone_s: int,
    watcher_s: float,
    with_ingest: bool,
    auth_env: Mapping[str, str] | None = None,
    ingest_workers: int = 1,
    auth_replicas: int = 1,
    crash_safe: bool = False,
    pool_size: int = 200,
) -> Stack:
    """Every role on free ports, configured as `make run` configures it (plus a bench publisher
    allowed on live/#); stopped by `Stack.stop()` (or here, if start-up fails).

    `ingest_workers` > 1: workers on a shared subscription and the averager, as `make run` with
    INGEST_WORKERS; `auth_replicas` broker_auth processes; `crash_safe`: the devnet's API node
    may be killed (a coordinator node of its own gives the milestones).
    """
    started: list[procs.Proc] = []
    publisher_password = secrets.token_urlsafe(12)
    try:
        broker = procs.mosquitto(
            workdir / "mosquitto",
            admin_password=secrets.token_urlsafe(12),
            ingest_password=secrets.token_urlsafe(12),
            extra_clients=[publisher_client(publisher_password)],
            extra_roles=[publisher_role()],
        )
        started.append(broker.proc)
        ferret, ferret_port = procs.ferretdb(workdir / "ferretdb")
        started.append(ferret)
        store = procs.influx(workdir / "influxdb")
        started.append(store.proc)
        devnet = procs.devnet(workdir / "devnet", milestone_s, crash_safe=crash_safe)
        started += [p for p in (devnet.coordinator, devnet.node, devnet.faucet) if p is not None]
        demo_password = secrets.token_urlsafe(12)
        auth = _start_auth(
            workdir,
            broker,
            ferret_port,
            store,
            devnet,
            watcher_s,
            demo_password,
            auth_env,
            pool_size,
        )
        started.append(auth.proc)
        stack = Stack(
            workdir, broker, ferret, store, devnet, auth, demo_password, publisher_password
        )
        procs.wait_until(lambda: bool(auth.products()), 30, "the demo seed")
        for i in range(1, auth_replicas):
            replica = start_replica(auth, workdir / f"broker_auth-{i}")
            stack.replicas.append(replica)
            started.append(replica.proc)
        if with_ingest:
            started += _start_ingest(stack, ingest_workers)
        return stack
    except BaseException:
        for proc in reversed(started):
            with contextlib.suppress(Exception):
                proc.stop()
        raise


def _start_auth(
    workdir: Path,
    broker: procs.MosquittoHandle,
    ferret_port: int,
    store: procs.InfluxHandle,
    devnet: procs.Devnet,
    watcher_s: float,
    demo_password: str,
    auth_env: Mapping[str, str] | None,
    pool_size: int,
) -> AuthStack:
    return start_auth_stack(
        workdir / "broker_auth",
        broker,
        f"mongodb://127.0.0.1:{ferret_port}/",
        devnet.url,
        {
            "MQTT_WS_PORT": str(broker.ws_port),
            "IOTA_MWM": os.environ.get("IOTA_MWM", str(BENCH_MWM)),
            "WATCHER_INTERVAL_S": str(watcher_s),
            # The node's event feed wakes the watcher at each milestone, as in make run.
            "IOTA_NODE_ZMQ_URL": devnet.zmq_url,
            "RECONCILE_INTERVAL_S": "60",  # the production default
            **store.writer_env,
            "SEED_DEMO": "true",
            "DEMO_DEVICE_PASSWORD": demo_password,
            # Every buyer of a benchmark signs up and orders from 127.0.0.1.
            "SIGNUP_MAX_PER_IP": "100000",
            **(auth_env or {}),
        },
        pool_size=pool_size,
        wait_for_node=True,
        ready_timeout=90,
    )


def _start_ingest(stack: Stack, workers: int) -> list[procs.Proc]:
    """The ingest worker(s), and the averager when there are several; started and ready."""
    base = {
        "MQTT_PORT": str(stack.broker.port),
        "INGEST_MQTT_PASSWORD": stack.broker.ingest_password,
        **stack.store.writer_env,
        "INGEST_METRICS_HOST": "127.0.0.1",
    }
    started: list[procs.Proc] = []
    for i in range(workers):
        port = procs.free_port()
        env = {**base, "INGEST_METRICS_PORT": str(port)}
        if workers > 1:  # as make run's INGEST_WORKERS: a shared subscription, averages forwarded
            env |= {
                "INGEST_AVERAGES": "forward",
                "INGEST_SHARE_GROUP": "ingest",
                "INGEST_CLIENT_ID": f"worker-{i}",
            }
        name = f"ingest-{i}" if workers > 1 else "ingest"
        worker = procs.python_service(
            name,
            "ingest",
            stack.workdir / name,
            env,
            ready=mqtt_ready(f"http://127.0.0.1:{port}/metrics"),
        )
        stack.ingest.append(worker)
        stack.ingest_metrics_ports.append(port)
        started.append(worker.start())
    if workers > 1:
        port = procs.free_port()
        env = {**base, "INGEST_AVERAGER_METRICS_PORT": str(port)}
        stack.averager = procs.python_service(
            "averager",
            "ingest.averager",
            stack.workdir / "averager",
            env,
            ready=mqtt_ready(f"http://127.0.0.1:{port}/metrics"),
        )
        started.append(stack.averager.start())
    return started


def mqtt_ready(metrics_url: str) -> Callable[[], bool]:
    """A readiness check of an ingest worker or the averager: connected and subscribed."""

    def ready() -> bool:
        try:
            return scrape_metrics(metrics_url).get("ingest_mqtt_ready") == 1.0
        except OSError:
            return False

    return ready


def simulator_summary(proc: procs.Proc) -> dict[str, Any]:
    """The JSON summary line `iot-sim --json` prints when it is done."""
    for line in reversed(proc.log_text().splitlines()):
        if line.startswith("{"):
            summary: dict[str, Any] = json.loads(line)
            return summary
    raise RuntimeError(f"{proc.name} printed no summary; log:\n{proc.tail()}")
