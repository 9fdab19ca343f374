"""Grafana's revenue panel equals GET /api/revenue (the payment records) after the store and
broker_auth are killed at the wrong moments: confirmed payments reach InfluxDB through a
durable outbox in MongoDB. The panel's own Flux query is run, interpolated as Grafana does."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from pymongo import MongoClient
from pymongo.database import Database

from broker_auth.billing.outbox import payment_point
from stack import influxdb
from testing import procs
from testing.broker_auth import AuthStack
from testing.procs import REPO_ROOT, wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.dashboards import grafana
from tests.devnet_fixture import pay_from_fresh_seed

PASSWORD = "outbox-buyer-pw-1"
PRODUCT = "outbox-live"
PANEL = ("business", "Confirmed revenue")


@dataclass
class Shop:
    stack: AuthStack
    store: procs.InfluxHandle
    devnet: procs.Devnet
    buyer: str

    def db(self) -> Database[dict[str, Any]]:
        client: MongoClient[dict[str, Any]] = MongoClient(self.stack.env["MONGO_URL"])
        return client[self.stack.env["MONGO_DB"]]

    def pay(self, iota: int) -> dict[str, Any]:
        order = self.stack.order(self.buyer, PASSWORD, PRODUCT, iota / 3600)
        pay_from_fresh_seed(self.devnet, order["address"], order["tag"], iota)
        self.stack.wait_confirmed(self.buyer, PASSWORD, order["order_id"])
        return order

    def revenue(self) -> int:
        rows = self.stack.http().get("/api/revenue", headers=self.stack.admin).json()
        return sum(int(r["confirmed_iota"]) for r in rows)

    def panel_total(self) -> float:
        every = grafana.targets(REPO_ROOT / "dashboard/dashboards")
        (target,) = [t for t in every if (t.dashboard, t.panel) == PANEL]
        now = dt.datetime.now(dt.UTC)
        query = grafana.interpolate(
            target.query,
            start=now - dt.timedelta(hours=1),
            stop=now + dt.timedelta(seconds=1),
            interval_s=10,
            default_bucket=influxdb.DATABASE,
        )
        return sum(float(r["_value"]) for r in self.store.reader().flux(query))

    def panel_agrees(self, timeout: float = 30) -> None:
        wait_for(lambda: self.panel_total() == self.revenue(), timeout, "panel = revenue", 0.5)


@pytest.fixture(scope="module")
def shop(
    auth_stack_factory: AuthStackFactory,
    devnet: procs.Devnet,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shop]:
    workdir: Path = tmp_path_factory.mktemp("outbox")
    store = procs.influx(workdir / "influxdb")
    try:
        stack = auth_stack_factory("outbox", node_url=devnet.url, **store.writer_env)
        stack.create_product(PRODUCT, "live/outbox/#", 3600)
        buyer = f"rich-{secrets.token_hex(3)}"
        stack.register(buyer, PASSWORD)
        yield Shop(stack, store, devnet, buyer)
    finally:
        store.proc.stop()


def test_revenue_reaches_the_panel(shop: Shop) -> None:
    shop.pay(30)
    shop.panel_agrees()
    assert shop.revenue() == 30


def test_store_down_when_paid(shop: Shop) -> None:
    shop.store.proc.kill()
    try:
        shop.pay(31)
        assert shop.db().outbox.count_documents({}) == 1  # waiting for the store, durably
    finally:
        shop.store.proc.start()
    shop.panel_agrees()
    assert shop.revenue() == 61


def test_broker_auth_killed_before_delivering(shop: Shop) -> None:
    shop.store.proc.kill()
    try:
        shop.pay(32)
        shop.stack.proc.kill()  # SIGKILL with the point still in the outbox
        assert shop.db().outbox.count_documents({}) == 1
    finally:
        shop.store.proc.start()
        shop.stack.proc.start()
    shop.panel_agrees()
    assert shop.revenue() == 93


def test_crash_between_the_payment_record_and_the_outbox(shop: Shop) -> None:
    """The state a crash right after inserting a payment leaves: the payment exists, the
    address's accounted value has not moved, and no outbox entry. The watcher finds the value
    again, keeps the one payment and makes the entry."""
    shop.store.proc.kill()
    try:
        order = shop.pay(33)
        shop.stack.proc.kill()
        db = shop.db()
        (payment,) = list(db.payments.find({"order_id": order["order_id"]}))
        db.outbox.delete_many({})
        db.watchlist.update_one(
            {"_id": order["address"]}, {"$set": {"accounted_iota": payment["from_iota"]}}
        )
    finally:
        shop.store.proc.start()
        shop.stack.proc.start()
    shop.panel_agrees()
    assert shop.revenue() == 126
    assert shop.db().payments.count_documents({"order_id": order["order_id"]}) == 1


def test_every_delivery_is_idempotent(shop: Shop) -> None:
    # Delivering the same payments again (a crash after writing, before deleting) changes nothing.
    lines = [payment_point(p) for p in shop.db().payments.find()]
    token = shop.store.credentials.writer_token
    with InfluxDBClient(shop.store.url, token=token, org="iot") as client:
        client.write_api(write_options=SYNCHRONOUS).write(influxdb.DATABASE, record=lines)
    assert shop.panel_total() == shop.revenue() == 126
