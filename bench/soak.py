"""Soak: 1,000 simulated plugs at 2 Hz for 5 minutes while 50 buyers sign up, order and pay.

The whole stack runs on free ports as `make run` configures it (dynamic security, FerretDB,
InfluxDB, the devnet (Hornet) with 1 s milestones, broker_auth with WATCHER_INTERVAL_S=0.5,
the ingest worker with its defaults), plus `iot-sim --devices 1000 --rate 2` (one MQTT connection,
QoS 1, as the benchmark publisher allowed on live/#). Product `soak-live` sells live/sd-1/#.

Measured during the run:
- sustained throughput: the worker's stored-readings counter, sampled every 5 s, over the
  run after a warm-up (the first 10 %), against the offered 2 000 readings/s;
- reading-to-store latency: a poller asks InfluxDB every 0.25 s for the points of 10
  of the devices (sd-1, sd-101, ...) newer than it has seen; the latency of a sample is the
  time the answer holding it arrived minus the `ts` in its payload (set by the simulator when
  it published). So it covers broker queueing, the worker's batching and write, and
  InfluxDB answering a query with it; it is an upper bound by at most one poll
  (the poll period plus the request, reported). The worker's own store-write histogram is
  reported beside it;
- payment-to-access: each buyer registers, orders 0.01 h (5 iota), signs a bundle from an
  address funded before the run, sends it, then connects + SUBSCRIBEs every 20 ms until granted;
  latency = grant seen - when the node first reported the bundle confirmed (polled every 20 ms);
- memory: VmRSS and VmHWM of every process every 5 s; "flat" = the RSS trend (least squares)
  over the second half of the run grows by less than 10 %; CPU time per process;
- lost readings: readings the broker acknowledged to the simulator minus distinct points in
  InfluxDB after the worker caught up.

Environment: SOAK_SECONDS (default 300), SOAK_DEVICES (1000), SOAK_RATE_HZ (2), SOAK_BUYERS (50),
BENCH_MILESTONE_INTERVAL_S (2).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import math
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import RESULTS_DIR, write_result
from bench.pipeline import count_stored, histogram_quantile
from testing import procs
from testing.mqtt import wait_for_access

WATCHER_INTERVAL_S = 0.5
PRODUCT = "soak-live"
PRICE = 500
HOURS = 0.01
PREFIX = "sd-"
SAMPLE_EVERY_S = 5.0
VISIBILITY_POLL_S = 0.25
BUYER_THREADS = 4
FLAT_GROWTH_PCT = 10.0
SERIES_PATH = RESULTS_DIR / "soak-rss.json"


class VisibilityProbe:
    """Polls InfluxDB for new points of a few devices; records ts -> visible latency."""

    def __init__(self, store: procs.InfluxHandle, devices: list[str]) -> None:
        self.reader = store.reader()
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
            f' AND time >= {since_ms}ms GROUP BY "device"'
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
        self.pids = {name: harness.pid_of(p) for name, p in stack.processes().items()}
        self.memory: dict[str, list[tuple[float, int, int]]] = {n: [] for n in self.pids}
        self.cpu: dict[str, list[tuple[float, float]]] = {n: [] for n in self.pids}
        self.stored: list[tuple[float, float, float]] = []  # t, stored, received

    def sample(self) -> None:
        now = time.time()
        for name, pid in self.pids.items():
            try:
                mem = harness.proc_memory_kb(pid)
                cpu = harness.proc_cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                continue  # exited (the simulator, at the end)
            self.memory[name].append((now, mem["VmRSS"], mem["VmHWM"]))
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
        cpu_pct = (
            100 * (cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0])
            if len(cpu) >= 2 and cpu[-1][0] > cpu[0][0]
            else math.nan
        )
        table[name] = {
            "peak_mb": round(max(s[2] for s in samples) / 1024, 1),
            "rss_start_mb": round(in_run[0][1] / 1024, 1),
            "rss_mid_mb": round(at_mid / 1024, 1),
            "rss_end_mb": round(in_run[-1][1] / 1024, 1),
            "second_half_growth_pct": harness.rounded(growth, 1),
            "flat": bool(not math.isnan(growth) and growth < FLAT_GROWTH_PCT),
            "cpu_pct_of_one_core": harness.rounded(cpu_pct, 1),
        }
        series[name] = [[round(t - begin, 1), round(rss / 1024, 1)] for t, rss, _ in samples]
    return table, series


def throughput_figures(sampler: Sampler, begin: float, end: float) -> dict[str, Any]:
    warm = begin + 0.1 * (end - begin)
    window = [s for s in sampler.stored if warm <= s[0] <= end + 0.5]
    if len(window) < 2:
        return {"stored_per_s": None}
    rate = (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
    steps = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(window) if b[0] > a[0]]
    backlog = [s[2] - s[1] for s in window]  # received but not yet stored by the worker
    return {
        "stored_per_s": round(rate, 1),
        "stored_per_s_min_5s_interval": round(min(steps), 1) if steps else None,
        "stored_per_s_max_5s_interval": round(max(steps), 1) if steps else None,
        "worker_backlog_max": int(max(backlog)),
        "window_s": round(window[-1][0] - window[0][0], 1),
    }


def run_buyer(
    stack: harness.Stack,
    wallet: harness.Wallet,
    clock: harness.ConfirmationClock,
    source: Any,
    username: str,
    start_at: float,
    stop: threading.Event,
) -> dict[str, Any]:
    if stop.wait(max(0.0, start_at - time.time())):
        return {"username": username, "error": "not started"}
    row: dict[str, Any] = {"username": username, "started_at": time.time()}
    try:
        stack.auth.register(username, harness.BUYER_PASSWORD)
        order = stack.auth.order(username, harness.BUYER_PASSWORD, PRODUCT, HOURS)
        row["signup_and_order_s"] = time.time() - row["started_at"]
        signed = wallet.sign(source, order["address"], order["tag"], order["amount_iota"])
        row["bundle"] = signed.bundle_hash
        row["sent_at"] = time.time()
        clock.watch(signed.bundle_hash, wallet.send(signed))
        access = wait_for_access(
            stack.broker.port,
            username,
            stack.auth.mqtt_passwords[username],
            f"live/{PREFIX}1/#",
            timeout=90,
        )
        access.probe.close()
        row["access_at"] = access.granted_at
        row["attempts"] = access.attempts
    except Exception as exc:  # reported, not fatal: the soak goes on
        row["error"] = f"{type(exc).__name__}: {exc}"
    return row


def soak(workdir: Path, seconds: float, devices: int, rate: float, buyers: int) -> dict[str, Any]:
    milestone_s = int(os.environ.get("BENCH_MILESTONE_INTERVAL_S", "1"))
    stack = harness.start_stack(
        workdir, milestone_s=milestone_s, watcher_s=WATCHER_INTERVAL_S, with_ingest=True
    )
    stop = threading.Event()
    periodic: list[harness.Periodic] = []
    try:
        stack.auth.create_product(PRODUCT, f"live/{PREFIX}1/#", PRICE)
        wallet = harness.Wallet(stack.devnet)
        sources = wallet.fund([math.ceil(PRICE * HOURS)] * buyers)
        clock = harness.ConfirmationClock(stack.devnet.url)
        sim = stack.simulator(
            "simulator",
            harness.PUBLISHER,
            stack.publisher_password,
            [
                "--devices",
                str(devices),
                "--device-prefix",
                PREFIX,
                "--rate",
                str(rate),
                "--duration",
                str(seconds),
                "--seed",
                "7",
                "--json",
            ],
        )
        watched = [f"{PREFIX}{i}" for i in range(1, devices + 1, max(1, devices // 10))][:10]
        visibility = VisibilityProbe(stack.store, watched)
        sim.start()
        begin = time.time()
        sampler = Sampler(stack)
        periodic = [
            harness.Periodic(SAMPLE_EVERY_S, sampler.sample, "sampler").start(),
            harness.Periodic(VISIBILITY_POLL_S, visibility.poll, "visibility").start(),
        ]
        run = secrets.token_hex(3)
        spacing = 0.85 * seconds / max(1, buyers)
        with concurrent.futures.ThreadPoolExecutor(BUYER_THREADS) as pool:
            futures = [
                pool.submit(
                    run_buyer,
                    stack,
                    wallet,
                    clock,
                    sources[i],
                    f"soak-{run}-{i}",
                    begin + 2 + i * spacing,
                    stop,
                )
                for i in range(buyers)
            ]
            assert sim.popen is not None
            sim.popen.wait(seconds + 120)
            end = time.time()
            rows = [f.result() for f in futures]
        summary = harness.simulator_summary(sim)
        published = int(summary["published"])
        caught_up = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if stack.ingest_metrics().get("ingest_readings_stored_total", 0) >= published:
                caught_up = time.time()
                break
            time.sleep(0.25)
        for p in periodic:
            p.stop()
        periodic = []
        ingest_metrics = stack.ingest_metrics()
        stored = count_stored(stack.store, PREFIX)
        confirmed = clock.stop()
    finally:
        stop.set()
        for p in periodic:
            p.stop()
        stack.stop()
    for row in rows:
        row["confirmed_at"] = confirmed.get(row.get("bundle", ""))
    return {
        "summary": summary,
        "begin": begin,
        "end": end,
        "caught_up": caught_up,
        "stored": stored,
        "ingest_metrics": ingest_metrics,
        "sampler": sampler,
        "visibility": visibility,
        "rows": rows,
        "milestone_s": milestone_s,
    }


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "300"))
    devices = int(os.environ.get("SOAK_DEVICES", "1000"))
    rate = float(os.environ.get("SOAK_RATE_HZ", "2"))
    buyers = int(os.environ.get("SOAK_BUYERS", "50"))
    load = harness.LoadMonitor().start()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        r = soak(Path(tmp), seconds, devices, rate, buyers)
    summary, begin, end = r["summary"], r["begin"], r["end"]
    published = int(summary["published"])
    rows = r["rows"]
    paid = [x for x in rows if "access_at" in x and x.get("confirmed_at")]
    access = [x["access_at"] - x["confirmed_at"] for x in paid]
    memory, series = memory_figures(r["sampler"], begin, end)
    visibility: VisibilityProbe = r["visibility"]
    m = r["ingest_metrics"]
    figures: dict[str, Any] = {
        "seconds": seconds,
        "devices": devices,
        "rate_hz_per_device": rate,
        "offered_readings_per_s": devices * rate,
        "publisher": {
            "acked": published,
            "sent": summary["sent"],
            "refused": summary["refused"],
            "unacked": summary["unacked"],
            "send_rate_per_s": summary["send_rate_per_s"],
        },
        "throughput": throughput_figures(r["sampler"], begin, end),
        "stored": r["stored"],
        "lost_readings": published - r["stored"],
        "worker_caught_up_after_publisher_s": harness.rounded(r["caught_up"] - end, 1)
        if r["caught_up"]
        else None,
        "reading_to_visible_in_store_s": {
            **harness.spread([lat for _, lat in visibility.latencies]),
            # Without the first 10 % of the run (start-up of the worker and the store's index).
            "after_warmup": harness.spread(
                [lat for ts, lat in visibility.latencies if ts >= begin + 0.1 * (end - begin)]
            ),
            "devices_sampled": len(visibility.devices),
            "poll_period_s": VISIBILITY_POLL_S,
            "poll_request_s_mean": harness.rounded(
                sum(visibility.poll_seconds) / max(1, len(visibility.poll_seconds))
            ),
        },
        "ingest_store_write_s": {
            "p99": harness.rounded(histogram_quantile(m, "ingest_store_write_seconds", 0.99), 3),
            "mean": harness.rounded(
                m.get("ingest_store_write_seconds_sum", math.nan)
                / max(1.0, m.get("ingest_store_write_seconds_count", 0.0))
            ),
            "writes": int(m.get("ingest_store_write_seconds_count", 0)),
        },
        "payment_to_access_s": harness.spread(access),
        "buyers": {
            "started": buyers,
            "granted": sum(1 for x in rows if "access_at" in x),
            "errors": [x["error"] for x in rows if "error" in x][:10],
            "signup_and_order_s": harness.spread(
                [x["signup_and_order_s"] for x in rows if "signup_and_order_s" in x]
            ),
        },
        "memory": memory,
        "memory_flat": all(v["flat"] for v in memory.values()),
        "settings": {
            "watcher_interval_s": WATCHER_INTERVAL_S,
            "milestone_interval_s": r["milestone_s"],
            "order_hours": HOURS,
            "sample_every_s": SAMPLE_EVERY_S,
        },
        "load": load.stop(),
        "rss_series": str(SERIES_PATH.relative_to(RESULTS_DIR.parent.parent)),
    }
    write_result("soak", figures)
    SERIES_PATH.write_text(json.dumps({"t_s_and_rss_mb": series}) + "\n")
    return 0 if figures["buyers"]["granted"] == buyers else 1


if __name__ == "__main__":
    sys.exit(main())
