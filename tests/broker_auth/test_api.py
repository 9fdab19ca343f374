"""The HTTP API against a real broker_auth process (no IOTA node: payments are elsewhere)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math

import httpx
import pytest

from broker_auth.ledger import ternary
from testing.broker_auth import AuthStack
from testing.procs import wait_for
from tests.broker_auth.conftest import AuthStackFactory

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def stack(auth_stack_factory: AuthStackFactory) -> AuthStack:
    s = auth_stack_factory("api", SEED_DEMO="true", DEMO_DEVICE_PASSWORD="demo-device-pw-123")
    wait_for(lambda: s.http().get("/api/products").json(), 15, "the demo seed")
    return s


@pytest.fixture(scope="module")
def api(stack: AuthStack) -> httpx.Client:
    return stack.http()


@pytest.fixture(scope="module")
def buyer(stack: AuthStack) -> tuple[str, str]:
    stack.register("alice", PASSWORD)
    return ("alice", PASSWORD)


def parse_time(value: str) -> dt.datetime:
    assert value.endswith("Z"), value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_health_reports_each_dependency(api: httpx.Client) -> None:
    wait_for(lambda: api.get("/healthz").status_code == 200, 20, "healthz 200")
    body = api.get("/healthz").json()
    assert body == {
        "status": "ok",
        "mongo": "ok",
        "broker": "ok",
        "node": "ok",
        "deposit_addresses": "ok",
        "free_addresses": body["free_addresses"],
        "leader": True,  # the only replica holds the payments lease
    }
    assert body["free_addresses"] >= 20  # the pool of 40 minus this module's orders so far


def test_products_list_has_the_demo_product(api: httpx.Client) -> None:
    products = api.get("/api/products").json()
    assert {
        "id": "plug-1-live",
        "topic_filter": "live/plug-1/#",
        "price_iota_per_hour": 500,
        "description": products[0]["description"],
    } in products


def test_register_then_taken(api: httpx.Client) -> None:
    r = api.post("/api/accounts", json={"username": "bob-1", "password": PASSWORD})
    assert r.status_code == 201
    body = r.json()
    assert set(body) == {"username", "mqtt_password"} and body["username"] == "bob-1"
    # Generated, long and random: never the login password.
    assert len(body["mqtt_password"]) >= 32 and body["mqtt_password"] != PASSWORD
    again = api.post("/api/accounts", json={"username": "bob-1", "password": "another-password"})
    assert again.status_code == 409
    assert "detail" in again.json()


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": PASSWORD},  # too short
        {"username": "Bob", "password": PASSWORD},  # upper case
        {"username": "svc.admin", "password": PASSWORD},  # dots are reserved
        {"username": "device.x", "password": PASSWORD},
        {"username": "1abc", "password": PASSWORD},  # must start with a letter
        {"username": "a" * 33, "password": PASSWORD},
        {"username": "carol", "password": "short"},
        {"username": "carol", "password": "x" * 129},
        {"username": "carol", "password": "tab\tin-password"},
        {"username": "carol"},
        {"password": PASSWORD},
        {"username": "carol", "password": PASSWORD, "admin": True},  # extra field
        {"username": 123, "password": PASSWORD},
        {"username": "carol", "password": 1234567890123},
        {},
        [],
        "carol",
        None,
    ],
)
def test_invalid_account_bodies_are_422(api: httpx.Client, body: object) -> None:
    r = api.post("/api/accounts", json=body)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()
    # The submitted values (possibly passwords) are not echoed back.
    assert PASSWORD not in r.text


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {"Content-Type": "application/json"}),
        (b'{"username": "x", "password": ', {"Content-Type": "application/json"}),
        (b"\xff\xfe\x00", {"Content-Type": "application/json"}),
        (b"username=x&password=y", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"", {"Content-Type": "application/json"}),
        (b'{"username": "x"}', {"Content-Type": "text/plain"}),
    ],
)
def test_malformed_bodies_are_4xx(
    api: httpx.Client, content: bytes, headers: dict[str, str]
) -> None:
    r = api.post("/api/accounts", content=content, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    assert "detail" in r.json()


def test_oversized_body_is_413(api: httpx.Client) -> None:
    r = api.post("/api/accounts", json={"username": "dave", "password": "p" * 100_000})
    assert r.status_code == 413
    assert "detail" in r.json()


def test_admin_endpoints_refuse_missing_or_wrong_tokens(
    stack: AuthStack, api: httpx.Client
) -> None:
    product = {"id": "nope", "topic_filter": "live/x/#", "price_iota_per_hour": 5}
    calls = [
        ("POST", "/api/products", product),
        ("POST", "/api/devices", {"device_id": "nope"}),
        ("GET", "/api/payments", None),
    ]
    wrong = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Bearer {stack.admin_token}x"},
        {"Authorization": f"Basic {stack.admin_token}"},
        {"Authorization": stack.admin_token},
    ]
    for method, path, body in calls:
        for headers in wrong:
            r = api.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert "detail" in r.json()
    # A buyer's Basic credentials are not admin credentials either.
    assert api.get("/api/payments", auth=("alice", PASSWORD)).status_code == 401
    assert api.get("/api/products").json()  # still there, nothing was created
    assert "nope" not in {p["id"] for p in api.get("/api/products").json()}


def test_admin_creates_products(stack: AuthStack, api: httpx.Client) -> None:
    body = {
        "id": "p-api",
        "topic_filter": "live/dev-api/+/x",
        "price_iota_per_hour": 7,
        "description": "test",
    }
    r = api.post("/api/products", json=body, headers=stack.admin)
    assert r.status_code == 201, r.text
    assert r.json() == body
    assert body in api.get("/api/products").json()
    assert api.post("/api/products", json=body, headers=stack.admin).status_code == 409
    # The product's role exists in Mosquitto with read access to its filter.
    role = stack.control().call({"command": "getRole", "rolename": "product.p-api"}).data["role"]
    assert {(a["acltype"], a["topic"]) for a in role["acls"]} == {
        ("subscribePattern", "live/dev-api/+/x"),
        ("publishClientReceive", "live/dev-api/+/x"),
    }


@pytest.mark.parametrize(
    "body",
    [
        {"id": "p-bad", "topic_filter": "avg/#", "price_iota_per_hour": 5},  # not under live/
        {"id": "p-bad", "topic_filter": "live", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "#", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "+/x", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "live/#/x", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "live/a+/x", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "live/a#", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "$CONTROL/#", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "live/x\u0000", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "live/" + "x" * 300, "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "live/x/#", "price_iota_per_hour": 0},
        {"id": "p-bad", "topic_filter": "live/x/#", "price_iota_per_hour": -5},
        {"id": "p-bad", "topic_filter": "live/x/#", "price_iota_per_hour": 1.5},
        {"id": "p-bad", "topic_filter": "live/x/#", "price_iota_per_hour": "5"},
        {"id": "p-bad", "topic_filter": "live/x/#", "price_iota_per_hour": True},
        {"id": "p-bad", "topic_filter": "live/x/#", "price_iota_per_hour": 10**30},
        {"id": "P-Bad", "topic_filter": "live/x/#", "price_iota_per_hour": 5},
        {"id": "p.bad", "topic_filter": "live/x/#", "price_iota_per_hour": 5},
        {"id": "", "topic_filter": "live/x/#", "price_iota_per_hour": 5},
        {"id": "p-bad", "topic_filter": "live/x/#", "price_iota_per_hour": 5, "x": 1},
        {"id": "p-bad", "topic_filter": "live/x/#", "price_iota_per_hour": 5, "description": 3},
        {"id": "p-bad", "topic_filter": "live/x/#"},
    ],
)
def test_invalid_products_are_422(stack: AuthStack, api: httpx.Client, body: object) -> None:
    r = api.post("/api/products", json=body, headers=stack.admin)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_admin_creates_devices(stack: AuthStack, api: httpx.Client) -> None:
    r = api.post("/api/devices", json={"device_id": "dev-api"}, headers=stack.admin)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["device_id"] == "dev-api"
    assert body["username"] == "device.dev-api"
    assert len(body["password"]) >= 24
    assert (
        api.post("/api/devices", json={"device_id": "dev-api"}, headers=stack.admin).status_code
        == 409
    )
    assert stack.client_roles("device.dev-api") == {"device.dev-api"}
    for bad in [
        {"device_id": "Dev"},
        {"device_id": "a.b"},
        {"device_id": ""},
        {"device_id": "-a"},
        {"device_id": "a" * 65},
        {"device_id": 5},
        {},
        {"device_id": "ok", "x": 1},
    ]:
        r = api.post("/api/devices", json=bad, headers=stack.admin)
        assert r.status_code == 422, (bad, r.text)


def test_order_for_plug_1(api: httpx.Client, stack: AuthStack, buyer: tuple[str, str]) -> None:
    before = dt.datetime.now(dt.UTC)
    r = api.post("/api/orders", json={"product_id": "plug-1-live", "hours": 0.1}, auth=buyer)
    assert r.status_code == 201, r.text
    order = r.json()
    assert set(order) == {
        "order_id",
        "product_id",
        "hours",
        "amount_iota",
        "address",
        "tag",
        "status",
        "expires_at",
    }
    assert order["amount_iota"] == 50
    assert order["address"] in stack.pool
    assert len(order["tag"]) == 27 and set(order["tag"]) <= set(ternary.ALPHABET)
    assert order["status"] == "pending"
    expires = parse_time(order["expires_at"])
    assert before + dt.timedelta(minutes=59) < expires < before + dt.timedelta(minutes=61)
    got = api.get(f"/api/orders/{order['order_id']}", auth=buyer)
    assert got.status_code == 200
    full = got.json()
    assert full["paid_iota"] == 0 and full["confirmed_iota"] == 0
    assert full["status"] == "pending"
    assert {k: full[k] for k in order} == order
    mine = api.get("/api/orders", auth=buyer).json()
    assert order["order_id"] in {o["order_id"] for o in mine}


@pytest.mark.parametrize(
    ("hours", "price", "amount"),
    [(0.1, 500, 50), (1, 500, 500), (0.001, 500, 1), (0.0001, 500, 1), (2.5, 7, 18), (1 / 3, 7, 3)],
)
def test_amount_is_ceil_of_price_times_hours(
    api: httpx.Client, buyer: tuple[str, str], hours: float, price: int, amount: int
) -> None:
    product = "plug-1-live" if price == 500 else "p-api"
    r = api.post("/api/orders", json={"product_id": product, "hours": hours}, auth=buyer)
    assert r.status_code == 201, r.text
    assert r.json()["amount_iota"] == amount == math.ceil(round(price * hours, 9))


def test_tags_are_unique(api: httpx.Client, buyer: tuple[str, str]) -> None:
    tags = {
        api.post("/api/orders", json={"product_id": "plug-1-live", "hours": 1}, auth=buyer).json()[
            "tag"
        ]
        for _ in range(10)
    }
    assert len(tags) == 10


@pytest.mark.parametrize(
    "body",
    [
        {"product_id": "plug-1-live", "hours": 0},
        {"product_id": "plug-1-live", "hours": -1},
        {"product_id": "plug-1-live", "hours": "1"},
        {"product_id": "plug-1-live", "hours": True},
        {"product_id": "plug-1-live", "hours": None},
        {"product_id": "plug-1-live", "hours": 1e9},  # over MAX_ORDER_HOURS
        {"product_id": "plug-1-live", "hours": 1e308},
        {"product_id": "plug-1-live"},
        {"hours": 1},
        {"product_id": "Plug", "hours": 1},
        {"product_id": "plug-1-live", "hours": 1, "price": 1},
        {"product_id": ["plug-1-live"], "hours": 1},
    ],
)
def test_invalid_orders_are_4xx(api: httpx.Client, buyer: tuple[str, str], body: object) -> None:
    r = api.post("/api/orders", json=body, auth=buyer)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_order_nan_and_unknown_product(api: httpx.Client, buyer: tuple[str, str]) -> None:
    for raw in (
        b'{"product_id": "plug-1-live", "hours": NaN}',
        b'{"product_id": "plug-1-live", "hours": Infinity}',
    ):
        r = api.post(
            "/api/orders", content=raw, headers={"Content-Type": "application/json"}, auth=buyer
        )
        assert r.status_code == 422, r.text
    r = api.post("/api/orders", json={"product_id": "no-such", "hours": 1}, auth=buyer)
    assert r.status_code == 404
    assert "detail" in r.json()


def test_orders_need_a_login(api: httpx.Client, buyer: tuple[str, str]) -> None:
    body = {"product_id": "plug-1-live", "hours": 1}
    assert api.post("/api/orders", json=body).status_code == 401
    r = api.post("/api/orders", json=body, auth=("alice", "wrong-password"))
    assert r.status_code == 401
    # No Basic challenge: a browser must never be invited to store Basic credentials.
    assert "basic" not in r.headers["www-authenticate"].lower()
    assert api.get("/api/grants").status_code == 401
    for header in [
        "Basic",
        "Basic !!!",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Bearer x",
    ]:
        r = api.get("/api/grants", headers={"Authorization": header})
        assert r.status_code == 401, (header, r.text)


def test_wrong_owner_gets_404(stack: AuthStack, api: httpx.Client, buyer: tuple[str, str]) -> None:
    order = api.post(
        "/api/orders", json={"product_id": "plug-1-live", "hours": 1}, auth=buyer
    ).json()
    stack.register("mallory", PASSWORD)
    r = api.get(f"/api/orders/{order['order_id']}", auth=("mallory", PASSWORD))
    assert r.status_code == 404
    assert r.json() == {"detail": "no such order"}
    # Same answer as an order that does not exist at all.
    assert api.get("/api/orders/does-not-exist", auth=("mallory", PASSWORD)).json() == r.json()
    assert order["order_id"] not in {
        o["order_id"] for o in api.get("/api/orders", auth=("mallory", PASSWORD)).json()
    }


def test_grants_empty_and_payments_empty(
    stack: AuthStack, api: httpx.Client, buyer: tuple[str, str]
) -> None:
    assert api.get("/api/grants", auth=buyer).json() == []
    assert api.get("/api/payments", headers=stack.admin).json() == []
    assert api.get("/api/payments?limit=0", headers=stack.admin).status_code == 422
    assert api.get("/api/payments?limit=x", headers=stack.admin).status_code == 422


@pytest.mark.parametrize(
    "query", ["offset=false&offset=false&offset=0.0", "offset=5&offset=0", "limit=1&limit="]
)
def test_a_query_parameter_given_twice_is_422_not_the_last_one_read(
    stack: AuthStack, api: httpx.Client, query: str
) -> None:
    r = api.get(f"/api/payments?{query}", headers=stack.admin)
    assert r.status_code == 422, r.text
    name = query.split("=")[0]
    assert r.json()["detail"] == [
        {"loc": ["query", name], "msg": "given more than once", "type": "repeated"}
    ]
    assert api.get("/api/payments?offset=0&limit=5", headers=stack.admin).status_code == 200


def test_openapi_documents_every_call(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    expected = {
        ("get", "/healthz"),
        ("post", "/api/accounts"),
        ("get", "/api/products"),
        ("post", "/api/products"),
        ("post", "/api/devices"),
        ("post", "/api/orders"),
        ("get", "/api/orders/{order_id}"),
        ("get", "/api/grants"),
        ("get", "/api/payments"),
        ("get", "/metrics"),
        # The design's calls for sessions, accounts and the seller's workspace.
        ("post", "/api/sessions"),
        ("delete", "/api/sessions/current"),
        ("post", "/api/account/password"),
        ("post", "/api/account/mqtt-password"),
        ("get", "/api/devices"),
        ("post", "/api/devices/{device_id}/password"),
        ("delete", "/api/devices/{device_id}"),
        ("patch", "/api/products/{product_id}"),
        ("get", "/api/revenue"),
        ("get", "/api/payments.csv"),
    }
    for method, path in expected:
        op = spec["paths"][path][method]
        assert op.get("summary"), (method, path)
    created = spec["paths"]["/api/orders"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/OrderCreated")


def test_metrics_are_prometheus_text(api: httpx.Client) -> None:
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "broker_auth_http_requests_total" in r.text
    assert "broker_auth_auth_failures_total" in r.text


def test_unknown_routes_are_json_404(api: httpx.Client) -> None:
    r = api.get("/api/nothing")
    assert r.status_code == 404
    assert json.loads(r.text)["detail"]
    assert api.delete("/api/products").status_code == 405
