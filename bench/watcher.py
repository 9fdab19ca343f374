"""The payment watcher's cost per poll: time and node calls, by watched orders and by history.

Real parts: Hornet (the devnet), FerretDB, Mosquitto; the watcher runs in this process (its
`poll_once`, as the service's thread calls it) against a database filled directly with:
- W watched orders (pool addresses `assigned`, window open, nothing paid yet), W = 10, 1,000,
  10,000; each poll asks the ledger for their balances and, as none is confirmed yet, for the
  valid bundles paying them (what `paid_iota` shows);
- with 10 watched orders, 10,000 historical payments on closed orders (addresses `closed`,
  fully accounted, payment records credited).
Every node request of a poll goes through a counting adapter. The stray scan (addresses no
order holds, every STRAY_SCAN_INTERVAL_S) is measured apart, once, on the 10,000 closed ones.

Target: a poll's cost grows with the watched orders only; history adds nothing.
Environment: BENCH_WATCHER_POLLS (polls per case, default 5).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import harness
from bench.common import write_result
from broker_auth.access.grants import Grants
from broker_auth.billing.orders import Orders
from broker_auth.billing.payments import Payments, payment_id
from broker_auth.billing.pool import DepositAddresses
from broker_auth.billing.watcher import Watcher
from broker_auth.broker.control import DynsecClient
from broker_auth.broker.projector import Projector
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger.iri import IriLedger
from testing import procs
from testing.addresses import random_address

WATCHED = (10, 1_000, 10_000)
HISTORY = 10_000
TARGET = "poll cost grows with watched orders only: history adds no node call and <10% time"


class CountingAdapter:
    """Wraps pyota's adapter: counts each command sent to the node."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def send_request(self, payload: dict[str, Any], **kwargs: Any) -> Any:
        self.calls[str(payload.get("command"))] += 1
        return self.inner.send_request(payload, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def fill(store: Store, watched: int, history: int) -> None:
    now = dt.datetime.now(dt.UTC)
    later = now + dt.timedelta(days=1)
    docs: list[Doc] = []
    watchlist: list[Doc] = []
    orders: list[Doc] = []
    for i in range(watched):
        address, order_id = random_address(), f"w{i}-{secrets.token_hex(4)}"
        docs.append(
            {
                "_id": address,
                "state": "assigned",
                "order_id": order_id,
                "accounted_iota": 0,
                "added_at": now,
            }
        )
        watchlist.append(
            {
                "_id": address,
                "order_id": order_id,
                "accounted_iota": 0,
                "pending_iota": 0,
                "bundles": [],
                "watch_until": later,
                "order_expires_at": later,
            }
        )
        orders.append({"_id": order_id, "address": address, "product_id": "p", "username": "u"})
    payments: list[Doc] = []
    for i in range(history):
        address, order_id = random_address(), f"h{i}-{secrets.token_hex(4)}"
        docs.append(
            {
                "_id": address,
                "state": "closed",
                "order_id": order_id,
                "accounted_iota": 5,
                "added_at": now,
                "watch_until": now,
            }
        )
        payments.append(
            {
                "_id": payment_id(address, 0),
                "address": address,
                "amount_iota": 5,
                "matched": True,
                "credited": True,
                "order_id": order_id,
                "confirmed_at": now,
                "bundles": [],
            }
        )
    for collection, batch in (
        (store.deposit_addresses, docs),
        (store.watchlist, watchlist),
        (store.orders, orders),
        (store.payments, payments),
    ):
        for start in range(0, len(batch), 1000):
            if batch[start : start + 1000]:
                collection.insert_many(batch[start : start + 1000])


def measure_case(
    mongo_url: str, node_url: str, dynsec: DynsecClient, watched: int, history: int, polls: int
) -> dict[str, Any]:
    store = Store(mongo_url, f"bench_watcher_{secrets.token_hex(4)}")
    store.ensure_indexes()
    fill(store, watched, history)
    ledger = IriLedger(node_url)
    counting = CountingAdapter(ledger.api.adapter)
    ledger.api.adapter = counting
    projector = Projector(store, dynsec)
    pool = DepositAddresses(store, ledger, 0)
    watcher = Watcher(
        store,
        ledger,
        pool,
        Payments(store),
        Grants(store, projector),
        Orders(store, pool, ledger, 3600.0, 8760.0, 86400.0, 3, 7 * 86400.0),
        stray_scan_interval_s=1e9,
    )
    watcher._next_maintenance = float("inf")
    watcher.poll_once()  # warm: connections, caches
    counting.calls.clear()
    seconds = []
    for _ in range(polls):
        started = time.perf_counter()
        watcher.poll_once()
        seconds.append(time.perf_counter() - started)
    per_poll = {k: v / polls for k, v in sorted(counting.calls.items())}
    result: dict[str, Any] = {
        "watched_orders": watched,
        "historical_payments": history,
        "poll_s_median": round(statistics.median(seconds), 4),
        "poll_s_max": round(max(seconds), 4),
        "node_calls_per_poll": per_poll,
        "node_calls_total_per_poll": sum(per_poll.values()),
    }
    if history:
        counting.calls.clear()
        started = time.perf_counter()
        watcher.scan_strays()
        result["stray_scan_s"] = round(time.perf_counter() - started, 3)
        result["stray_scan_node_calls"] = dict(counting.calls)
    store.client.drop_database(store.db.name)
    store.close()
    return result


def main() -> int:
    polls = int(os.environ.get("BENCH_WATCHER_POLLS", "5"))
    load = harness.LoadMonitor().start()
    with tempfile.TemporaryDirectory(prefix="bench-watcher-") as tmp:
        work = Path(tmp)
        net = procs.devnet(work / "devnet")
        ferret, ferret_port = procs.ferretdb(work / "ferretdb")
        broker = procs.mosquitto(
            work / "mosquitto",
            admin_password=secrets.token_urlsafe(12),
            ingest_password=secrets.token_urlsafe(12),
        )
        dynsec = DynsecClient("127.0.0.1", broker.port, "svc.broker-admin", broker.admin_password)
        dynsec.start()
        try:
            dynsec.wait_ready(10)
            mongo = f"mongodb://127.0.0.1:{ferret_port}/"
            cases = [measure_case(mongo, net.url, dynsec, w, 0, polls) for w in WATCHED]
            cases.append(measure_case(mongo, net.url, dynsec, WATCHED[0], HISTORY, polls))
        finally:
            dynsec.stop()
            broker.proc.stop()
            ferret.stop()
            net.stop()
    base, with_history = cases[0], cases[-1]
    met = (
        with_history["node_calls_total_per_poll"] == base["node_calls_total_per_poll"]
        and with_history["poll_s_median"] <= base["poll_s_median"] * 1.10 + 0.002
    )
    figures = {
        "cases": cases,
        "settings": {"polls_per_case": polls, "milestone_interval_s": 1, "ledger": "Hornet 0.5.6"},
        "target": TARGET,
        "target_met": met,
        "load": load.stop(),
    }
    write_result("watcher", figures)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
