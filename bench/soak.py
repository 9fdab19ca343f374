"""Chaos soak: today's stack under load for SOAK_SECONDS while a random process is SIGKILLed.

The stack is `make run`'s with scale-out (bench/harness.py on free ports): Mosquitto (dynamic
security, persistence, autosave every 10 s), FerretDB, InfluxDB, the devnet (Hornet's API node
following a coordinator node, milestones every BENCH_MILESTONE_INTERVAL_S), the faucet, two
broker_auth replicas (one holds the payments lease) with instant access on as in `make run`
(INSTANT_ACCESS_MAX_S 600), two ingest workers on a shared subscription and the averager.

Load: `iot-sim` with SOAK_DEVICES (1,000) devices at SOAK_RATE_HZ (2) each on one QoS 1
connection; SOAK_BUYERS (50) buyers who sign up, then buy BUY_S (120 s) of `live/sd-1/#` again
and again, each from its own funded address: 60 % of the time they renew while the grant runs
(the time stacks), else they let it end and buy again 5-30 s later. Each buyer calls from an
address of its own (X-Forwarded-For from loopback), under the production throttles.

Chaos: every SOAK_KILL_EVERY_S (120 s) one process picked at random (seeded: SOAK_SEED; in rounds
of a shuffled list, so each is killed about as often as the others) gets
SIGKILL and is started again 2 s later on the same port and data, as supervisord or Docker
would restart it. Candidates: every process above but the coordinator node (it stands for the
IOTA network) and the simulator (the devices).

Figures (bench/results/soak.json):
- readings: the simulator tallies what the broker acknowledged by the second of each reading's
  `ts`; after the run InfluxDB counts what it holds per second. Lost = acknowledged - stored,
  per second (a second holding more than was acknowledged is counted apart, and can hide as
  many losses of that second), counted apart inside Mosquitto's autosave window before each of
  its kills (it persists every 10 s: what it acknowledged since is gone with it; the window is
  widened by ACK_LAG_S, as readings are tallied by their ts) and outside (must be 0);
- reading -> visible in the store: a poller asks InfluxDB every 0.25 s for 10 devices' new
  points (latency = answer time - the reading's ts), p50/p99 overall and away from the kills;
- payments: every purchase's sum of credited payments against the ledger (getBalances of its
  address) and each bundle credited once (credited twice must be 0); first purchases: send ->
  subscription granted (instant access: how long before the confirmation, too); renewals:
  confirmation -> the credit seen by the buyer: its `grant_extended` notice on
  `notify/<username>` (a persistent session), or its order read back every 5 s in case the
  notice was lost (`renewal_credit_seen_by` counts which). A waiting first buyer tries its
  subscription every 0.25 s, as an app would: that figure is that coarse;
- grants past their end: once a second every grant's end (admin API) and, for a buyer whose
  grant ended, whether Mosquitto still gives its client the product's role; the time past the
  end it was last seen (a lower bound) and first seen gone (an upper bound, +1 s of polling),
  against the hand-over (LEASE_TTL_S 5 s + 1 s);
- memory: RSS of every process every 5 s (across restarts: `lives`), at start, end and peak;
  CPU per process; the machine's load.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from iota import Address
from prometheus_client.parser import text_string_to_metric_families

from bench import harness
from bench.chaos import Buyer, GrantWatch, Kill, Killer, Overdue, Purchase, Shop
from bench.common import RESULTS_DIR, write_result
from broker_auth.broker.reconciliation import product_rolename
from testing import procs
from testing.broker_auth import AuthStack
from testing.scrape import http_text

WATCHER_INTERVAL_S = 0.5
PRODUCT = "soak-live"
PRICE = 3600  # iota per hour: 1 iota buys 1 s
BUY_S = 120.0
PREFIX = "sd-"
SAMPLE_EVERY_S = 5.0
VISIBILITY_POLL_S = 0.25
FLAT_GROWTH_PCT = 10.0
RESTART_AFTER_S = 2.0
AUTOSAVE_INTERVAL_S = 10.0  # mosquitto/mosquitto.conf.template
ACK_LAG_S = 5.0
HANDOVER_S = 5.0 + 1.0  # LEASE_TTL_S, and the watch's own second
CALM_AFTER_KILL_S = 30.0  # readings this long after a process is back count as "away"
SERIES_PATH = RESULTS_DIR / "soak-rss.json"
# broker_auth as make run has it: instant access on, the production throttles (each buyer has
# an address of its own: X-Forwarded-For, trusted from loopback).
AUTH_ENV = {
    "INSTANT_ACCESS_MAX_S": "600",
    "FORWARDED_ALLOW_IPS": "127.0.0.1",
    "SIGNUP_MAX_PER_IP": "30",
    "ORDER_MAX_PER_IP": "60",
    "ORDER_MAX_PER_BUYER": "30",
    "MAX_UNPAID_ORDERS": "3",
    "MAX_UNPAID_QUOTES": "3",
}


class VisibilityProbe:
    """Polls InfluxDB for new points of a few devices; records ts -> visible latency."""

    def __init__(self, store: procs.InfluxHandle, devices: list[str]) -> None:
        self.reader = store.reader()
        self.http = httpx.Client()  # a kept connection: it asks 4 times a second
        self.devices = devices
        self.newest = time.time()
        self.seen: set[tuple[str, int]] = set()
        self.latencies: list[tuple[float, float]] = []  # (reading ts, latency)
        self.poll_seconds: list[float] = []

    def poll(self) -> None:
        pattern = "|".join(re.escape(d) for d in self.devices)
        since_ms = int((self.newest - 10) * 1000)
        asked = time.time()
        body = self.reader.query(
            f'SELECT "value" FROM "reading" WHERE "device" =~ /^({pattern})$/'
            f' AND time >= {since_ms}ms GROUP BY "device"',
            self.http,
        )
        answered = time.time()
        self.poll_seconds.append(answered - asked)
        for series in body["results"][0].get("series", []):
            device = series["tags"]["device"]
            for ts_ms, _ in series["values"]:
                key = (device, int(ts_ms))
                if key in self.seen:
                    continue
                self.seen.add(key)
                self.latencies.append((ts_ms / 1000, answered - ts_ms / 1000))
                self.newest = max(self.newest, ts_ms / 1000)


class Sampler:
    """Every few seconds: memory and CPU of each process, and the worker's counters."""

    def __init__(self, stack: harness.Stack) -> None:
        self.stack = stack
        names = list(stack.processes())
        self.memory: dict[str, list[tuple[float, int, int]]] = {n: [] for n in names}
        self.cpu: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        self.pids: dict[str, set[int]] = {n: set() for n in names}  # more than one: restarted
        self.stored: list[tuple[float, float, float]] = []  # t, stored, received

    def sample(self) -> None:
        now = time.time()
        for name, proc in self.stack.processes().items():
            if name not in self.memory or proc.popen is None:
                continue
            pid = proc.popen.pid  # read each time: a killed process comes back with another
            try:
                rss, hwm, cpu = harness.tree_memory_and_cpu(pid)
            except OSError:
                continue  # down (killed, or the simulator at the end)
            if rss == 0:
                continue
            self.pids[name].add(pid)
            self.memory[name].append((now, rss, hwm))
            self.cpu[name].append((now, cpu))
        m = self.stack.ingest_metrics()
        self.stored.append(
            (
                now,
                m.get("ingest_readings_stored_total", 0.0),
                m.get("ingest_readings_received_total", 0.0),
            )
        )


def trend_growth_pct(points: list[tuple[float, float]]) -> float:
    """Growth of the least-squares line from the first to the last point, in % of its start."""
    if len(points) < 3:
        return math.nan
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0
    start = mean_v + slope * (points[0][0] - mean_t)
    end = mean_v + slope * (points[-1][0] - mean_t)
    return 100 * (end - start) / start if start else math.nan


def memory_figures(
    sampler: Sampler, begin: float, end: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    mid = (begin + end) / 2
    table: dict[str, Any] = {}
    series: dict[str, Any] = {}
    for name, samples in sampler.memory.items():
        if not samples:
            continue
        second_half = [(t, float(rss)) for t, rss, _ in samples if mid <= t <= end + 1]
        growth = trend_growth_pct(second_half)
        at_mid = min(samples, key=lambda s: abs(s[0] - mid))[1]
        in_run = [s for s in samples if s[0] <= end + 1] or samples
        cpu = [c for c in sampler.cpu[name] if begin <= c[0] <= end + 1]
        # CPU seconds summed over the process's lives (the counter restarts with the process).
        used = sum(max(0.0, b[1] - a[1]) for a, b in itertools.pairwise(cpu))
        cpu_pct = 100 * used / (cpu[-1][0] - cpu[0][0]) if len(cpu) >= 2 else math.nan
        table[name] = {
            "peak_mb": round(max(s[2] for s in samples) / 1024, 1),
            "rss_start_mb": round(in_run[0][1] / 1024, 1),
            "rss_mid_mb": round(at_mid / 1024, 1),
            "rss_end_mb": round(in_run[-1][1] / 1024, 1),
            "second_half_growth_pct": harness.rounded(growth, 1),
            "flat": bool(not math.isnan(growth) and growth < FLAT_GROWTH_PCT),
            "cpu_pct_of_one_core": harness.rounded(cpu_pct, 1),
            "lives": len(sampler.pids[name]),
        }
        series[name] = [[round(t - begin, 1), round(rss / 1024, 1)] for t, rss, _ in samples]
    return table, series


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    """What one soak sets going: the stack, its load, its observers and the killer."""

    stack: harness.Stack
    shop: Shop
    clock: harness.ConfirmationClock
    sim: procs.Proc
    buyers: list[Buyer]
    watch: GrantWatch
    visibility: VisibilityProbe
    sampler: Sampler
    periodic: list[harness.Periodic]
    killer: Killer
    stop: threading.Event
    begin: float
    funding_s: float
    store_probe: StoreTimeProbe
    cpu_at_begin: float  # this process's CPU time at `begin`

    def halt(self) -> None:
        """Stop the killer, the buyers and the observers (each at most once, any time)."""
        self.stop.set()
        self.killer.stop()
        for p in self.periodic:
            p.stop()


def run_soak(workdir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    stack = harness.start_stack(
        workdir,
        milestone_s=cfg["milestone_s"],
        watcher_s=WATCHER_INTERVAL_S,
        with_ingest=True,
        auth_env=AUTH_ENV,
        ingest_workers=2,
        auth_replicas=2,
        crash_safe=True,
        pool_size=cfg["buyers"] * 25,
    )
    run: Run | None = None
    try:
        run = set_going(stack, cfg)
        return finish(run, cfg)
    finally:
        if run is not None:
            run.halt()
        stack.stop()


def set_going(stack: harness.Stack, cfg: dict[str, Any]) -> Run:
    """Fund the buyers' addresses, then start the devices, the observers, the killer and the
    buyers (spread over the first BUY_S, or the first quarter of a short run)."""
    stack.auth.create_product(PRODUCT, f"live/{PREFIX}1/#", PRICE)
    wallet = harness.Wallet(stack.devnet)
    funding = time.time()
    sources = _Locked(iter(wallet.fund([int(PRICE * BUY_S / 3600)] * cfg["payments"])))
    funding = time.time() - funding
    clock = harness.ConfirmationClock(stack.devnet.url)
    shop = Shop(stack)
    sim = stack.simulator(
        "simulator",
        harness.PUBLISHER,
        stack.publisher_password,
        [
            *("--devices", str(cfg["devices"]), "--device-prefix", PREFIX),
            *("--rate", str(cfg["rate"]), "--duration", str(cfg["seconds"])),
            *("--seed", "7", "--json", "--tally-seconds", "--drain-timeout", "120"),
        ],
    )
    step = max(1, cfg["devices"] // 10)
    visibility = VisibilityProbe(stack.store, [f"{PREFIX}{i}" for i in range(1, 10 * step, step)])
    watch = GrantWatch(shop, stack, product_rolename(PRODUCT), PRODUCT)
    sim.start()
    begin = time.time()
    sampler = Sampler(stack)
    store_probe = StoreTimeProbe([stack.auth, *stack.replicas], begin)
    periodic = [
        # Its baseline is read above: the first interval ends one interval later.
        harness.Periodic(
            STORE_TIME_EVERY_S, store_probe.sample, "store-time", first_at_once=False
        ).start(),
        harness.Periodic(SAMPLE_EVERY_S, sampler.sample, "sampler").start(),
        harness.Periodic(VISIBILITY_POLL_S, visibility.poll, "visibility").start(),
        harness.Periodic(1.0, watch.poll, "grant-watch").start(),
    ]
    killer = Killer(stack, cfg["kill_every_s"], RESTART_AFTER_S, cfg["seed"]).start()
    stop = threading.Event()
    rng = random.Random(cfg["seed"])
    tag = secrets.token_hex(3)
    buyers = [
        Buyer(
            *(shop, stack, wallet, clock, sources, PRODUCT, f"live/{PREFIX}1/#", BUY_S),
            *(f"soak-{tag}-{i}", random.Random(rng.random()), stop),
            client_ip=f"10.0.{i // 250}.{i % 250 + 1}",
            on_paid=watch.paid,
        )
        for i in range(cfg["buyers"])
    ]
    spacing = min(BUY_S, cfg["seconds"] / 4) / max(1, cfg["buyers"])
    for i, buyer in enumerate(buyers):
        buyer.start(begin + 2 + i * spacing)
    return Run(
        *(stack, shop, clock, sim, buyers, watch, visibility, sampler, periodic, killer, stop),
        *(begin, funding, store_probe, time.process_time()),
    )


def finish(run: Run, cfg: dict[str, Any]) -> dict[str, Any]:
    """Once the devices are done: stop the chaos and the buyers, wait for the store, and read
    back what the store, the API and the ledger hold."""
    assert run.sim.popen is not None
    run.sim.popen.wait(cfg["seconds"] + 300)
    end = time.time()
    harness_cores = (time.process_time() - run.cpu_at_begin) / (end - run.begin)
    kills = run.killer.stop()
    run.stop.set()
    for buyer in run.buyers:
        buyer.join(300)
    summary = harness.simulator_summary(run.sim)
    caught_up = _wait_stored(run.stack, int(summary["published"]), PREFIX)
    time.sleep(3)  # the last grants' ends, seen by the watch
    run.halt()
    store_time = store_time_by_collection([run.stack.auth, *run.stack.replicas])
    purchases = [p for b in run.buyers for p in b.purchases]
    return {
        "summary": summary,
        "begin": run.begin,
        "end": end,
        "caught_up": caught_up,
        "stored_by_second": stored_by_second(
            run.stack.store, PREFIX, run.begin - 60, time.time() + 1
        ),
        "kills": kills,
        "sampler": run.sampler,
        "visibility": run.visibility,
        "purchases": purchases,
        **read_back(run, purchases),
        "confirmed": run.clock.stop(),
        "overdue": run.watch.results(),
        "watch_misses": run.watch.misses,
        "buyer_errors": [e for b in run.buyers for e in b.errors],
        "strays_cancelled": sum(b.strays_cancelled for b in run.buyers),
        "api_retries": run.shop.retries,
        "api_failed_attempts": run.shop.failed_attempts,
        "funding_s": run.funding_s,
        "store_time": store_time,
        "store_time_by_interval": run.store_probe.intervals,
        "harness_cores": harness_cores,
    }


STORE_SECONDS = "broker_auth_store_command_seconds"
STORE_TIME_EVERY_S = float(os.environ.get("SOAK_STORE_TIME_EVERY_S", "180"))


def store_time_of(replica: AuthStack) -> tuple[dict[str, tuple[float, float]], float | None]:
    """One replica's time in the store since its last start, {"command collection": (seconds,
    calls)}, and when that process started; empty when it does not answer within 60 s (killed,
    or saturated)."""
    try:
        page = http_text(f"{replica.api_url}/metrics", timeout=60)
    except OSError:
        return {}, None
    table: dict[str, tuple[float, float]] = {}
    started: float | None = None
    for family in text_string_to_metric_families(page):
        if family.name == "process_start_time_seconds":
            started = family.samples[0].value if family.samples else None
        if family.name != STORE_SECONDS:
            continue
        for sample in family.samples:
            what = f"{sample.labels.get('command')} {sample.labels.get('collection')}"
            s, n = table.get(what, (0.0, 0.0))
            if sample.name == f"{STORE_SECONDS}_sum":
                table[what] = (s + sample.value, n)
            elif sample.name == f"{STORE_SECONDS}_count":
                table[what] = (s, n + sample.value)
    return table, started


def costliest(table: dict[str, tuple[float, float]], top: int) -> dict[str, Any]:
    return {
        "seconds_total": round(sum(s for s, _ in table.values()), 1),
        "calls_total": int(sum(n for _, n in table.values())),
        "costliest": [
            {
                "command": what,
                "seconds": round(s, 1),
                "calls": int(n),
                "mean_ms": round(1000 * s / n, 1) if n else None,
            }
            for what, (s, n) in sorted(table.items(), key=lambda kv: -kv[1][0])[:top]
        ],
    }


def store_time_by_collection(replicas: list[AuthStack], top: int = 12) -> dict[str, Any]:
    """Where the replicas' time in the store went (since each one's last start), the costliest
    command and collection first: what to look at when the store saturates."""
    total: dict[str, tuple[float, float]] = {}
    for replica in replicas:
        for what, (s, n) in store_time_of(replica)[0].items():
            s0, n0 = total.get(what, (0.0, 0.0))
            total[what] = (s0 + s, n0 + n)
    return costliest(total, top)


class StoreTimeProbe:
    """Every STORE_TIME_EVERY_S: where the replicas' store time went in that interval, so a
    cost that grows with the run shows when it starts growing. A replica restarted since the
    last read (another process start time) counts from its restart; one that did not answer is
    named, and its time lands in the next interval it answers."""

    def __init__(self, replicas: list[AuthStack], begin: float) -> None:
        self.replicas = replicas
        self.begin = begin
        self.last = [store_time_of(r) for r in replicas]  # the baseline: set-up is not counted
        self.read_at = time.time()
        self.intervals: list[dict[str, Any]] = []

    def sample(self) -> None:
        delta: dict[str, tuple[float, float]] = {}
        missing = []
        for i, replica in enumerate(self.replicas):
            now, started = store_time_of(replica)
            if not now:
                missing.append(i)
                continue
            before, started_before = self.last[i]
            restarted = started != started_before
            for what, (s, n) in now.items():
                s0, n0 = (0.0, 0.0) if restarted else before.get(what, (0.0, 0.0))
                d0, c0 = delta.get(what, (0.0, 0.0))
                delta[what] = (d0 + max(0.0, s - s0), c0 + max(0.0, n - n0))
            self.last[i] = (now, started)
        at = time.time()
        self.intervals.append(
            {
                "at_s": round(at - self.begin),
                "length_s": round(at - self.read_at),
                "replicas_not_answering": missing,
                **costliest(delta, 6),
            }
        )
        self.read_at = at


def read_back(run: Run, purchases: list[Purchase]) -> dict[str, Any]:
    """The payment records and the ledger; a read that fails is said, the figures still written."""
    try:
        payments = all_payments(run.shop)
        ledger = ledger_balances(run.stack.devnet.url, sorted({p.address for p in purchases}))
    except Exception as exc:
        return {"payments": [], "ledger": {}, "read_back_error": f"{type(exc).__name__}: {exc}"}
    return {"payments": payments, "ledger": ledger, "read_back_error": None}


def all_payments(shop: Shop) -> list[dict[str, Any]]:
    """Every payment record, 200 a page (FerretDB answers a long page slowly)."""
    found: list[dict[str, Any]] = []
    while True:
        page = shop.call(
            "GET",
            f"/api/payments?limit=200&offset={len(found)}",
            200,
            deadline_s=600,
            headers=shop.admin,
            timeout=120,
        )
        found += page
        if len(page) < 200:
            return found


class _Locked:
    """An iterator shared by the buyers' threads."""

    def __init__(self, it: Iterator[Address]) -> None:
        self.it, self.lock = it, threading.Lock()

    def __iter__(self) -> _Locked:
        return self

    def __next__(self) -> Address:
        with self.lock:
            address: Address = next(self.it)
            return address


def _wait_stored(stack: harness.Stack, published: int, prefix: str) -> float | None:
    """When the store holds every acknowledged reading; None if its count stopped growing for
    30 s short of that (readings lost with a killed broker) or after 5 minutes."""
    deadline = time.monotonic() + 300
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        try:
            count = stack.store.reader().count_where_prefix("reading", "value", "device", prefix)
        except (OSError, RuntimeError):
            count = last
        if count >= published:
            return time.time()
        if count != last:
            last, still_since = count, time.monotonic()
        elif time.monotonic() - still_since > 30:
            return None
        time.sleep(5)
    return None


def stored_by_second(
    store: procs.InfluxHandle, prefix: str, since: float, until: float
) -> dict[int, int]:
    """Points InfluxDB holds for the prefix's devices, by the whole second of their time."""
    body = store.reader().query(
        f'SELECT count("value") FROM "reading" WHERE "device" =~ /^{re.escape(prefix)}/'
        f" AND time >= {int(since) * 1000}ms AND time < {int(until) * 1000}ms"
        " GROUP BY time(1s) fill(none)"
    )
    found: dict[int, int] = {}
    for series in body["results"][0].get("series", []):
        for ts_ms, count in series["values"]:
            if count:
                found[int(ts_ms) // 1000] = int(count)
    return found


def ledger_balances(node_url: str, addresses: list[str]) -> dict[str, int]:
    """Each address's confirmed balance at the node's latest solid milestone."""
    found: dict[str, int] = {}
    for i in range(0, len(addresses), 500):
        chunk = addresses[i : i + 500]
        r = httpx.post(
            node_url,
            json={"command": "getBalances", "addresses": chunk, "threshold": 100},
            headers=procs.IOTA_API_HEADERS,
            timeout=60,
        )
        r.raise_for_status()
        found.update(zip(chunk, (int(b) for b in r.json()["balances"]), strict=True))
    return found


# ---------------------------------------------------------------- figures


def reading_figures(r: dict[str, Any]) -> dict[str, Any]:
    acked = {int(k): v for k, v in r["summary"]["acked_by_second"].items()}
    stored: dict[int, int] = r["stored_by_second"]
    # By the readings' ts: one acknowledged since the broker's last save was sampled up to
    # ACK_LAG_S before its acknowledgement (the simulator's queue: 5,000 at most, 2.5 s).
    windows = [
        (k.at - AUTOSAVE_INTERVAL_S - ACK_LAG_S, k.at + 1)
        for k in r["kills"]
        if k.name == "mosquitto"
    ]
    lost_in, lost_out, extra = 0, 0, 0
    lost_seconds: list[int] = []
    for second in sorted(set(acked) | set(stored)):
        missing = acked.get(second, 0) - stored.get(second, 0)
        if missing < 0:
            extra -= missing
        elif missing > 0:
            if any(a <= second <= b for a, b in windows):
                lost_in += missing
            else:
                lost_out += missing
                lost_seconds.append(second)
    visibility: VisibilityProbe = r["visibility"]
    away = [(k.at - 5, (k.back_at or k.at) + CALM_AFTER_KILL_S) for k in r["kills"]]
    calm = [lat for ts, lat in visibility.latencies if not any(a <= ts <= b for a, b in away)]
    published = int(r["summary"]["published"])
    return {
        "acknowledged": published,
        "stored": sum(stored.values()),
        "lost_outside_mosquitto_autosave_windows": lost_out,
        "lost_inside_mosquitto_autosave_windows": lost_in,
        "lost_seconds_outside": [round(s - r["begin"]) for s in lost_seconds[:20]],
        "stored_not_acknowledged": extra,  # sent, stored, its PUBACK lost with a killed broker
        "refused": r["summary"]["refused"],
        "unacked_at_exit": r["summary"]["unacked"],
        "stored_per_s": round(sum(stored.values()) / max(1.0, r["end"] - r["begin"]), 1),
        "store_caught_up_after_publisher_s": harness.rounded(r["caught_up"] - r["end"], 1)
        if r["caught_up"]
        else None,
        "reading_to_visible_s": {
            "all": harness.spread([lat for _, lat in visibility.latencies]),
            "away_from_kills": harness.spread(calm),
            "devices_sampled": len(visibility.devices),
            "poll_period_s": VISIBILITY_POLL_S,
        },
    }


def payment_figures(r: dict[str, Any]) -> dict[str, Any]:
    purchases: list[Purchase] = r["purchases"]
    confirmed: dict[str, float] = r["confirmed"]
    credited = [p for p in r["payments"] if p["credited"]]
    by_address: Counter[str] = Counter()
    for p in credited:
        by_address[p["address"]] += p["amount_iota"]
    bundles = Counter(b for p in credited for b in p["bundles"])
    ledger: dict[str, int] = r["ledger"]
    paid = {p.address: p.amount for p in purchases}
    first = [(p, p.access_at) for p in purchases if not p.renewal and p.access_at is not None]
    renewals = [(p, p.credited_at) for p in purchases if p.renewal and p.credited_at is not None]
    unfinished = [p for p in purchases if p.access_at is None and p.credited_at is None]
    records: dict[str, list[dict[str, Any]]] = {}
    for record in r["payments"]:
        records.setdefault(record["address"], []).append(record)
    return {
        "read_back_error": r["read_back_error"],
        "purchases": len(purchases),
        "first_purchases": sum(1 for p in purchases if not p.renewal),
        "renewals": sum(1 for p in purchases if p.renewal),
        # Unknown (None) when the records could not be read back: never a false 0.
        "credited_twice": None
        if r["read_back_error"]
        else sum(1 for n in bundles.values() if n > 1)
        + sum(1 for a, v in by_address.items() if v > ledger.get(a, 0)),
        "credited_not_as_ledger": sorted(
            a[:12] for a in paid if by_address.get(a, 0) != ledger.get(a, 0)
        )[:10],
        "not_on_ledger": sum(1 for a, v in paid.items() if ledger.get(a, 0) < v),
        "send_to_access_s": harness.spread([access - p.sent_at for p, access in first]),
        # Instant access: most buyers read before the milestone; this is how long before.
        "access_before_confirmation_s": harness.spread(
            [confirmed[p.bundle] - access for p, access in first if p.bundle in confirmed]
        ),
        "renewal_confirmation_to_credited_s": harness.spread(
            [at - confirmed[p.bundle] for p, at in renewals if p.bundle in confirmed]
        ),
        # How the buyer learnt of it: its notice, or its order read back (a notice lost).
        "renewal_credit_seen_by": dict(Counter(str(p.credit_seen_by) for p, _ in renewals)),
        "without_access_or_credit": len(unfinished),
        "without_access_or_credit_detail": [
            unfinished_purchase(p, r, records, confirmed) for p in unfinished[:25]
        ],
        "buyer_errors": r["buyer_errors"][:15],
        "buyer_error_count": len(r["buyer_errors"]),
        # Orders created by a request the buyer saw fail (retried elsewhere), cancelled at a 429.
        "strays_cancelled": r["strays_cancelled"],
        "api_retries": r["api_retries"],
        "api_failed_attempts": r["api_failed_attempts"],
    }


def unfinished_purchase(
    p: Purchase,
    r: dict[str, Any],
    records: dict[str, list[dict[str, Any]]],
    confirmed: dict[str, float],
) -> dict[str, Any]:
    """What became of a paid purchase its buyer never saw granted or credited: late (the
    ledger and the shop have it, the buyer gave up or the run ended), stuck (confirmed, not
    credited) or never confirmed."""
    mine = records.get(p.address, [])
    return {
        "sent_at_s": round(p.sent_at - r["begin"]),
        "sent_before_end_s": round(r["end"] - p.sent_at),
        "renewal": p.renewal,
        "confirmed_after_s": harness.rounded(confirmed[p.bundle] - p.sent_at, 1)
        if p.bundle in confirmed
        else None,
        "recorded_iota": sum(int(x["amount_iota"]) for x in mine),
        "credited_iota": sum(int(x["amount_iota"]) for x in mine if x["credited"]),
        "amount_iota": p.amount,
        "ledger_iota": r["ledger"].get(p.address),
        "buyer_saw": p.error,
    }


def grant_figures(r: dict[str, Any]) -> dict[str, Any]:
    overdue: list[Overdue] = r["overdue"]
    ended = [o for o in overdue if not o.renewed]
    seen_late = [o.last_seen_granted - o.ends_at for o in ended]
    gone = [o.gone_seen - o.ends_at for o in ended if o.gone_seen is not None]
    kills: list[Kill] = r["kills"]
    late = [o for o in ended if o.last_seen_granted - o.ends_at > HANDOVER_S]
    return {
        "ended": len(ended),
        "renewed_after_end": len(overdue) - len(ended),
        "still_granted_past_end_s": harness.spread(seen_late),
        "seen_gone_after_end_s": harness.spread(gone),
        "past_end_by_more_than_handover": len(late),
        "handover_s": HANDOVER_S,
        "late": [
            {
                "past_end_s": round(o.last_seen_granted - o.ends_at, 1),
                "at_s": round(o.ends_at - r["begin"]),
                "kills_near": [k.name for k in kills if o.ends_at - 30 <= k.at <= o.ends_at + 5],
            }
            for o in late[:10]
        ],
        "watch_rounds_missed": r["watch_misses"],
    }


def kill_figures(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "process": k.name,
            "at_s": round(k.at - r["begin"]),
            "back_after_s": harness.rounded(k.back_at - k.at, 1) if k.back_at else None,
            "starts": k.attempts,
            **({"error": k.error} if k.error else {}),
        }
        for k in r["kills"]
    ]


def config() -> dict[str, Any]:
    env = os.environ.get
    seconds = float(env("SOAK_SECONDS", "1800"))
    buyers = int(env("SOAK_BUYERS", "50"))
    return {
        "seconds": seconds,
        "devices": int(env("SOAK_DEVICES", "1000")),
        "rate": float(env("SOAK_RATE_HZ", "2")),
        "buyers": buyers,
        # Enough funded addresses for every buyer to buy every 3/4 of BUY_S (it buys about
        # once per BUY_S: a renewal adds BUY_S to the grant, a lapse waits it out).
        "payments": buyers * (int(seconds / (0.75 * BUY_S)) + 2),
        "kill_every_s": float(env("SOAK_KILL_EVERY_S", "120")),
        "seed": int(env("SOAK_SEED", "1")),
        "milestone_s": int(env("BENCH_MILESTONE_INTERVAL_S", "1")),
    }


def main() -> int:
    cfg = config()
    load = harness.LoadMonitor().start()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        r = run_soak(Path(tmp), cfg)
    memory, series = memory_figures(r["sampler"], r["begin"], r["end"])
    figures: dict[str, Any] = {
        "seconds": cfg["seconds"],
        "devices": cfg["devices"],
        "rate_hz_per_device": cfg["rate"],
        "offered_readings_per_s": cfg["devices"] * cfg["rate"],
        "buyers": cfg["buyers"],
        "kills": kill_figures(r),
        "readings": reading_figures(r),
        "payments": payment_figures(r),
        "grants": grant_figures(r),
        "store_time": r["store_time"],
        "store_time_by_interval": r["store_time_by_interval"],
        "memory": memory,
        "settings": {
            "kill_every_s": cfg["kill_every_s"],
            "restart_after_s": RESTART_AFTER_S,
            "seed": cfg["seed"],
            "buy_s": BUY_S,
            "watcher_interval_s": WATCHER_INTERVAL_S,
            "milestone_interval_s": cfg["milestone_s"],
            "funding_s": round(r["funding_s"], 1),
        },
        "load": load.stop(),
        # The buyers, observers and signing are this process (the devices are the simulator's,
        # under memory): its share of the 2 cores during the run is not the stack's.
        "harness_cpu_cores": round(r["harness_cores"], 2),
        "rss_series": str(SERIES_PATH.relative_to(RESULTS_DIR.parent.parent)),
    }
    write_result("soak", figures)
    SERIES_PATH.write_text(json.dumps({"t_s_and_rss_mb": series}) + "\n")
    readings, payments, grants = figures["readings"], figures["payments"], figures["grants"]
    held = (
        readings["lost_outside_mosquitto_autosave_windows"] == 0
        and payments["credited_twice"] == 0
        and grants["past_end_by_more_than_handover"] == 0
    )
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
