"""Paid live access: from Hornet confirming a payment to the buyer's live subscription.

Stack: Mosquitto (dynamic security), FerretDB, InfluxDB, the devnet (Hornet, its own
coordinator, milestones every BENCH_MILESTONE_INTERVAL_S), broker_auth with the demo seed
(device plug-1, product plug-1-live at 500 iota/h), a pool of deposit addresses and
WATCHER_INTERVAL_S=0.5, and `iot-sim` publishing live/plug-1/power at 20 Hz as device plug-1.

Before measuring, every buyer registers and orders 0.01 h (5 iota), and one address per order is
generated and funded with exactly 5 iota (PyOTA's address generation stays out of the window).
Then, one payment at a time, after a random pause (so payments fall at every phase of the
milestone cycle):
  sign the bundle (PyOTA, timed apart) -> t_send -> send_trytes (attach + broadcast) ->
  connect + SUBSCRIBE live/plug-1/# as the buyer every 20 ms until granted (t_access) ->
  first live reading on that connection (t_first).
The confirmation time t_confirm is when the node first answered getInclusionStates true for the
bundle, asked every 20 ms by a thread of the benchmark (harness.ConfirmationClock; the watcher
asks every 0.5 s, so the latency is flattered by 20 ms at most). The watcher's own
confirmation time is the payment's `confirmed_at` in /api/payments.

Figures: confirmation -> access (target p99 <= 1 s), split into confirmation -> watcher saw it
-> access; send -> first live reading (end to end, with the milestone wait); signing time.

The watcher polls every 0.5 s and, as in `make run`, the node's ZMQ event feed wakes it at each
new solid milestone; BENCH_ACCESS_FEED=0 leaves the feed out (the poll alone), for comparison.

Two paths: by default instant access is off and access follows confirmation (the figure is
confirmation -> access, result `access`); BENCH_ACCESS_INSTANT=1 turns it on as `make run` has
it (INSTANT_ACCESS_MAX_S 600) and the figure is broadcast -> access (send_trytes returned ->
SUBACK; target p99 <= 1 s; result `access_instant`). Results are named with the milestone
interval when it is not 1 s (`access_30s`, `access_instant_30s`).

Environment: BENCH_ACCESS_PAYMENTS (default 20), BENCH_MILESTONE_INTERVAL_S (whole seconds,
default 1), BENCH_ACCESS_RATE_HZ (publisher, default 20), BENCH_ACCESS_FEED (default 1),
BENCH_ACCESS_INSTANT (default 0).
"""

from __future__ import annotations

import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import write_result
from bench.pipeline import histogram_quantile
from stack.mqtt_probe import MqttProbe
from testing.mqtt import wait_for_access

WATCHER_INTERVAL_S = 0.5
PRODUCT = "plug-1-live"
TOPIC = "live/plug-1/#"
HOURS = 0.01
TARGET_P99_S = 1.0


def wait_for_readings(stack: harness.Stack, timeout: float = 30) -> None:
    probe = MqttProbe(stack.broker.port, "svc.ingest", stack.broker.ingest_password)
    try:
        if not probe.connect() or not probe.subscribe(TOPIC):
            raise RuntimeError("the ingest account cannot read the live topic")
        if harness.first_live_message(probe, timeout) is None:
            raise RuntimeError("plug-1 publishes nothing")
    finally:
        probe.close()


def one_payment(
    stack: harness.Stack,
    wallet: harness.Wallet,
    clock: harness.ConfirmationClock,
    buyer: str,
    order: dict[str, Any],
    source: Any,
) -> dict[str, Any]:
    signed = wallet.sign(source, order["address"], order["tag"], order["amount_iota"])
    sent_at = time.time()
    clock.watch(signed.bundle_hash, wallet.send(signed))
    sent_done = time.time()
    password = stack.auth.mqtt_passwords[buyer]
    access = wait_for_access(stack.broker.port, buyer, password, TOPIC, timeout=60)
    try:
        first_at = harness.first_live_message(access.probe, 5)
    finally:
        access.probe.close()
    return {
        "buyer": buyer,
        "address": order["address"],
        "bundle": signed.bundle_hash,
        "signing_s": signed.signing_s,
        "sent_at": sent_at,
        "send_s": sent_done - sent_at,
        "access_at": access.granted_at,
        "last_refused_at": access.last_refused_at,
        "attempts": access.attempts,
        "first_at": first_at,
    }


def measure(
    workdir: Path, n: int, milestone_s: int, rate_hz: float, feed: bool, instant: bool
) -> dict[str, Any]:
    env = {"INSTANT_ACCESS_MAX_S": "600" if instant else "0"}
    if not feed:
        env["IOTA_NODE_ZMQ_URL"] = ""
    stack = harness.start_stack(
        workdir,
        milestone_s=milestone_s,
        watcher_s=WATCHER_INTERVAL_S,
        with_ingest=False,
        auth_env=env,
    )
    try:
        sim = stack.simulator(
            "simulator",
            "device.plug-1",
            stack.demo_password,
            ["--device", "plug-1", "--rate", str(rate_hz)],
        )
        sim.start()
        wait_for_readings(stack)
        run = secrets.token_hex(3)
        buyers = [f"bench-{run}-{i}" for i in range(n)]
        orders = []
        for buyer in buyers:
            stack.auth.register(buyer, harness.BUYER_PASSWORD)
            orders.append(stack.auth.order(buyer, harness.BUYER_PASSWORD, PRODUCT, HOURS))
        wallet = harness.Wallet(stack.devnet)
        sources = wallet.fund([o["amount_iota"] for o in orders])
        clock = harness.ConfirmationClock(stack.devnet.url)
        rows = []
        for buyer, order, source in zip(buyers, orders, sources, strict=True):
            time.sleep(random.uniform(0.2, milestone_s + 0.2))
            rows.append(one_payment(stack, wallet, clock, buyer, order, source))
        time.sleep(WATCHER_INTERVAL_S * 2)
        confirmed = clock.stop()
        watcher_seen = {
            p["address"]: harness.parse_time(p["confirmed_at"]) for p in stack.auth.payments()
        }
        auth_metrics = stack.auth.metrics()
    finally:
        stack.stop()
    for row in rows:
        row["confirmed_at"] = confirmed.get(row["bundle"])
        row["watcher_seen_at"] = watcher_seen.get(row["address"])
    return {
        "rows": rows,
        "grant_apply_p99_s": histogram_quantile(
            auth_metrics, "broker_auth_grant_apply_seconds", 0.99
        ),
    }


def figures_from(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r["confirmed_at"] is not None]
    confirm_to_access = [r["access_at"] - r["confirmed_at"] for r in ok]
    confirm_to_watcher = [
        r["watcher_seen_at"] - r["confirmed_at"] for r in ok if r["watcher_seen_at"]
    ]
    watcher_to_access = [r["access_at"] - r["watcher_seen_at"] for r in ok if r["watcher_seen_at"]]
    e2e = [r["first_at"] - r["sent_at"] for r in rows if r["first_at"] is not None]
    access_to_first = [r["first_at"] - r["access_at"] for r in rows if r["first_at"] is not None]
    send_to_confirm = [r["confirmed_at"] - r["sent_at"] for r in ok]
    # Instant path: from the bundle being on the node (send_trytes returned) to the SUBACK.
    broadcast_to_access = [r["access_at"] - (r["sent_at"] + r["send_s"]) for r in rows]
    before_confirmation = sum(1 for r in ok if r["access_at"] < r["confirmed_at"])
    # How long before t_access the previous attempt was refused: the probe's resolution.
    resolution = [r["access_at"] - r["last_refused_at"] for r in rows if r["last_refused_at"]]
    return {
        "payments": len(rows),
        "confirmation_to_access_s": harness.spread(confirm_to_access),
        "broadcast_to_access_s": harness.spread(broadcast_to_access),
        "access_before_confirmation": before_confirmation,
        "confirmation_to_watcher_s": harness.spread(confirm_to_watcher),
        "watcher_to_access_s": harness.spread(watcher_to_access),
        "send_to_first_live_message_s": harness.spread(e2e),
        "send_to_confirmation_s": harness.spread(send_to_confirm),
        "access_to_first_live_message_s": harness.spread(access_to_first),
        "send_trytes_s": harness.spread([r["send_s"] for r in rows]),
        "signing_s_outside_window": harness.spread([r["signing_s"] for r in rows]),
        "probe_resolution_s": harness.spread(resolution),
        "missing_confirmation": len(rows) - len(ok),
        "no_first_message": sum(1 for r in rows if r["first_at"] is None),
    }


def main() -> int:
    n = int(os.environ.get("BENCH_ACCESS_PAYMENTS", "20"))
    milestone_s = int(os.environ.get("BENCH_MILESTONE_INTERVAL_S", "1"))
    rate_hz = float(os.environ.get("BENCH_ACCESS_RATE_HZ", "20"))
    feed = os.environ.get("BENCH_ACCESS_FEED", "1") != "0"
    instant = os.environ.get("BENCH_ACCESS_INSTANT", "0") == "1"
    load = harness.LoadMonitor().start()
    with tempfile.TemporaryDirectory(prefix="bench-access-") as tmp:
        result = measure(Path(tmp), n, milestone_s, rate_hz, feed, instant)
    figures = figures_from(result["rows"])
    measured = "broadcast_to_access_s" if instant else "confirmation_to_access_s"
    p99 = figures[measured].get("p99")
    figures.update(
        {
            "grant_apply_p99_s_from_broker_auth": harness.rounded(result["grant_apply_p99_s"]),
            "settings": {
                "watcher_interval_s": WATCHER_INTERVAL_S,
                "node_event_feed": feed,
                "instant_access": instant,
                "milestone_interval_s": milestone_s,
                "publisher_hz": rate_hz,
                "probe_period_s": 0.02,
                "order_hours": HOURS,
            },
            "target": f"{measured.removesuffix('_s')} p99 <= {TARGET_P99_S} s",
            "target_met": p99 is not None and p99 <= TARGET_P99_S,
            "load": load.stop(),
        }
    )
    name = "access_instant" if instant else "access" if feed else "access_poll_only"
    write_result(name if milestone_s == 1 else f"{name}_{milestone_s}s", figures)
    complete = figures["missing_confirmation"] == 0 and figures["no_first_message"] == 0
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
