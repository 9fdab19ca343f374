"""The seller's admin calls: devices (list, rotate, delete), product changes, exact revenue and
the payments CSV, against a real broker_auth, Mosquitto, FerretDB, InfluxDB and Hornet."""

from __future__ import annotations

import csv
import datetime as dt
import io
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS

from ingest.store import _PRECISION as MS
from stack.mqtt_probe import MqttProbe
from testing import procs
from testing.broker_auth import AuthStack
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory
from tests.conftest import Store
from tests.devnet_fixture import pay_from_fresh_seed

PASSWORD = "admin-api-buyer-1"
PRICE = 3600


@dataclass
class Shop:
    stack: AuthStack
    devnet: procs.Devnet
    store: Store

    def api(self) -> httpx.Client:
        return self.stack.http()

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.api().request(method, path, headers=self.stack.admin, **kwargs)

    def order(self, username: str, product_id: str, hours: float) -> httpx.Response:
        return self.api().post(
            "/api/orders",
            json={"product_id": product_id, "hours": hours},
            auth=(username, PASSWORD),
        )

    def pay(self, username: str, order: dict[str, Any]) -> dict[str, Any]:
        pay_from_fresh_seed(self.devnet, order["address"], order["tag"], order["amount_iota"])
        return self.stack.wait_confirmed(username, PASSWORD, order["order_id"])


@pytest.fixture(scope="module")
def shop(
    auth_stack_factory: AuthStackFactory, devnet: procs.Devnet, influx: Store
) -> Iterator[Shop]:
    stack = auth_stack_factory(
        "admin-api",
        node_url=devnet.url,
        **influx.writer_env,  # with the reader's token, for the devices' last readings
    )
    stack.register("buyer", PASSWORD)
    yield Shop(stack, devnet, influx)


def device_probe(shop: Shop, device_id: str, password: str) -> MqttProbe:
    probe = shop.stack.probe(f"device.{device_id}", password)
    assert probe.connect()
    return probe


def test_devices_are_listed_with_their_last_reading(shop: Shop) -> None:
    device = f"adm-{secrets.token_hex(3)}"
    password = shop.admin("POST", "/api/devices", json={"device_id": device}).json()["password"]
    probe = device_probe(shop, device, password)
    probe.publish(f"live/{device}/power", "1.5")  # no worker here: written to the store below
    probe.close()
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    line = f"reading,device={device},sensor=power value=1.5 {int(at.timestamp() * 1000)}"
    token = shop.store.credentials.writer_token
    with InfluxDBClient(shop.store.url, token=token, org="iot") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            "telemetry", record=line, write_precision=MS
        )

    def listed() -> dict[str, Any] | None:
        rows = {d["device_id"]: d for d in shop.admin("GET", "/api/devices").json()}
        row = rows.get(device)
        return row if row and row["last_reading_at"] else None

    row = wait_for(listed, 15, "the device's last reading time", 0.5)
    assert row["username"] == f"device.{device}" and row["enabled"] is True
    assert dt.datetime.fromisoformat(row["last_reading_at"].replace("Z", "+00:00")) == at
    assert "password" not in row and "password_hash" not in row


def test_rotating_a_device_password_cuts_it_until_it_uses_the_new_one(shop: Shop) -> None:
    device = f"rot-{secrets.token_hex(3)}"
    old = shop.admin("POST", "/api/devices", json={"device_id": device}).json()["password"]
    probe = device_probe(shop, device, old)
    r = shop.admin("POST", f"/api/devices/{device}/password")
    assert r.status_code == 201, r.text
    new = r.json()["password"]
    assert new != old
    wait_for(lambda: probe.disconnects > 0, 5, "the connected device cut", 0.05)
    time.sleep(1.5)  # paho retries with the old password: refused
    assert not probe.connected
    probe.close()
    refused = shop.stack.probe(f"device.{device}", old)
    assert not refused.connect()
    device_probe(shop, device, new).close()


def test_deleting_a_device_cuts_it_and_refuses_its_logins(shop: Shop) -> None:
    device = f"del-{secrets.token_hex(3)}"
    password = shop.admin("POST", "/api/devices", json={"device_id": device}).json()["password"]
    probe = device_probe(shop, device, password)
    assert shop.admin("DELETE", f"/api/devices/{device}").status_code == 204
    wait_for(lambda: probe.disconnects > 0, 5, "the connected device cut", 0.05)
    probe.close()
    assert not shop.stack.probe(f"device.{device}", password).connect()
    rows = {d["device_id"]: d for d in shop.admin("GET", "/api/devices").json()}
    assert rows[device]["enabled"] is False
    assert shop.admin("DELETE", f"/api/devices/{device}").status_code == 404
    assert shop.admin("POST", f"/api/devices/{device}/password").status_code == 404
    # Reconciliation does not bring it back.
    shop.stack.restart()
    assert not shop.stack.probe(f"device.{device}", password).connect()
    # The seller may enroll the same id again, with a new password.
    again = shop.admin("POST", "/api/devices", json={"device_id": device})
    assert again.status_code == 201
    device_probe(shop, device, again.json()["password"]).close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/devices", None),
        ("POST", "/api/devices/x/password", None),
        ("DELETE", "/api/devices/x", None),
        ("PATCH", "/api/products/x", {"price_iota_per_hour": 1}),
        ("GET", "/api/revenue", None),
        ("GET", "/api/payments.csv", None),
    ],
)
def test_admin_calls_need_the_admin_token(
    shop: Shop, method: str, path: str, body: dict[str, Any] | None
) -> None:
    api = shop.api()
    assert api.request(method, path, json=body).status_code == 401
    assert api.request(method, path, json=body, auth=("buyer", PASSWORD)).status_code == 401
    wrong = {"Authorization": "Bearer " + secrets.token_urlsafe(24)}
    assert api.request(method, path, json=body, headers=wrong).status_code == 401


def test_product_changes_apply_to_new_orders_and_disabling_keeps_grants(shop: Shop) -> None:
    product = f"prod-{secrets.token_hex(3)}"
    created = shop.admin(
        "POST",
        "/api/products",
        json={"id": product, "topic_filter": f"live/{product}/#", "price_iota_per_hour": PRICE},
    )
    assert created.status_code == 201
    before = shop.order("buyer", product, 0.01).json()
    assert before["amount_iota"] == 36
    r = shop.admin(
        "PATCH", f"/api/products/{product}", json={"price_iota_per_hour": 7200, "description": "x"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "id": product,
        "topic_filter": f"live/{product}/#",
        "price_iota_per_hour": 7200,
        "description": "x",
        "active": True,
    }
    assert shop.order("buyer", product, 0.01).json()["amount_iota"] == 72
    # The order made before keeps its amount; paying it buys the time it priced.
    done = shop.pay("buyer", before)
    assert done["confirmed_iota"] == 36
    (grant,) = [
        g
        for g in shop.api().get("/api/grants", auth=("buyer", PASSWORD)).json()
        if g["product_id"] == product
    ]
    assert (
        shop.admin("PATCH", f"/api/products/{product}", json={"active": False}).status_code == 200
    )
    assert product not in {p["id"] for p in shop.api().get("/api/products").json()}
    every = {p["id"]: p for p in shop.admin("GET", "/api/products/all").json()}
    assert every[product]["active"] is False and every[product]["price_iota_per_hour"] == 7200
    assert shop.api().get("/api/products/all").status_code == 401
    refused = shop.order("buyer", product, 0.01)
    assert refused.status_code == 409 and "not on sale" in refused.json()["detail"]
    grants = shop.api().get("/api/grants", auth=("buyer", PASSWORD)).json()
    assert grant in grants  # running grants keep their time


@pytest.mark.parametrize(
    "body",
    [{}, {"price_iota_per_hour": 0}, {"price_iota_per_hour": "5"}, {"topic_filter": "live/#"}],
)
def test_bad_product_changes_are_refused(shop: Shop, body: dict[str, Any]) -> None:
    r = shop.admin("PATCH", "/api/products/anything", json=body)
    assert r.status_code in (404, 422), r.text
    assert r.status_code == 422 or body == {}


def test_revenue_and_csv_are_the_payment_records(shop: Shop) -> None:
    product = f"rev-{secrets.token_hex(3)}"
    shop.admin(
        "POST",
        "/api/products",
        json={"id": product, "topic_filter": f"live/{product}/#", "price_iota_per_hour": PRICE},
    )
    order = shop.order("buyer", product, 0.02).json()
    shop.pay("buyer", order)
    recorded = [
        p for p in shop.admin("GET", "/api/payments").json() if p["order_id"] == order["order_id"]
    ]
    assert sum(p["amount_iota"] for p in recorded) == 72
    today = dt.datetime.now(dt.UTC).date()
    rows = shop.admin("GET", "/api/revenue", params={"product_id": product}).json()
    assert rows == [
        {"day": today.isoformat(), "product_id": product, "confirmed_iota": 72, "payments": 1}
    ]
    # Totals over every product equal the sum of every payment record.
    every = shop.admin("GET", "/api/payments").json()
    total = sum(r["confirmed_iota"] for r in shop.admin("GET", "/api/revenue").json())
    assert total == sum(p["amount_iota"] for p in every)
    tomorrow = (today + dt.timedelta(days=1)).isoformat()
    assert shop.admin("GET", "/api/revenue", params={"from": tomorrow}).json() == []
    assert shop.admin("GET", "/api/revenue", params={"from": "soon"}).status_code == 422

    r = shop.admin("GET", "/api/payments.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert len(table) == len(every)
    (mine,) = [row for row in table if row["order_id"] == order["order_id"]]
    assert mine["amount_iota"] == "72" and mine["product_id"] == product
    assert mine["matched"] == "true" and mine["username"] == "buyer"
    assert mine["bundles"] == " ".join(recorded[0]["bundles"])
    empty = shop.admin("GET", "/api/payments.csv", params={"from": tomorrow})
    assert empty.text.splitlines() == [",".join(next(csv.reader(io.StringIO(r.text))))]
