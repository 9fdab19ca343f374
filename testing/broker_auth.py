"""broker_auth as a real process on a given broker and MongoDB, and helpers to talk to both.

Shared by every test package that needs the service (broker_auth, security, portal, faults,
dashboards) and by the benchmarks: one place builds its environment and decides when it is ready.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from broker_auth.broker.control import DynsecClient
from broker_auth.infra.clock import utcnow
from stack.mqtt_probe import MqttProbe
from testing import procs
from testing.addresses import random_address
from testing.procs import wait_for
from testing.scrape import scrape_metrics

CLOSED_PORT_URL = "http://127.0.0.1:9"  # nothing listens on the discard port


def credited_grant(
    username: str, product_id: str, topic_filter: str, seconds: float
) -> dict[str, Any]:
    """A grant document as a credit leaves it, ending in `seconds` (for tests that write one)."""
    now = utcnow()
    return {
        "_id": f"{username}/{product_id}",
        "username": username,
        "product_id": product_id,
        "topic_filter": topic_filter,
        "starts_at": now,
        "expires_at": now + dt.timedelta(seconds=seconds),
        "active": True,
        "applied_payments": [],
        "updated_at": now,
    }


@dataclass
class AuthStack:
    """One broker_auth process, its broker, and helpers to talk to both."""

    proc: procs.Proc
    api_url: str
    broker: procs.MosquittoHandle
    admin_token: str
    pool: list[str]  # the deposit addresses loaded at start (IOTA_DEPOSIT_ADDRESSES_FILE)
    env: dict[str, str]
    _control: DynsecClient | None = field(default=None, repr=False)
    # The MQTT password broker_auth gave each buyer this stack registered (not the login one).
    mqtt_passwords: dict[str, str] = field(default_factory=dict, repr=False)
    # What /healthz must report "ok" for `ready()` (the benchmarks wait for the node too).
    ready_parts: tuple[str, ...] = ("mongo", "broker")

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=15)

    def health(self) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = httpx.get(f"{self.api_url}/healthz", timeout=3).json()
            return body
        except (httpx.HTTPError, ValueError):
            return None

    def ready(self) -> bool:
        body = self.health()
        return bool(body and all(body.get(part) == "ok" for part in self.ready_parts))

    def pool_state(self, state: str | None = None) -> dict[str, Any]:
        params = {"state": state} if state else {}
        r = httpx.get(
            f"{self.api_url}/api/deposit-addresses", params=params, headers=self.admin, timeout=15
        )
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    def restart(self) -> None:
        self.proc.stop()
        self.proc.start()

    def probe(self, username: str | None = None, password: str | None = None) -> MqttProbe:
        p = MqttProbe(self.broker.port, username, password)
        return p

    def control(self) -> DynsecClient:
        """The tests' own dynamic-security client, to inspect and disturb Mosquitto."""
        if self._control is None:
            self._control = DynsecClient(
                "127.0.0.1", self.broker.port, "svc.broker-admin", self.broker.admin_password
            )
            self._control.start()
            assert self._control.wait_ready(10), "test control client could not connect"
        return self._control

    def client_roles(self, username: str) -> set[str] | None:
        client = self.control().get_client(username)
        if client is None:
            return None
        return {str(r["rolename"]) for r in client.get("roles", [])}

    def register(self, username: str, password: str) -> str:
        """Register a buyer; returns (and keeps) the MQTT password broker_auth generated."""
        r = httpx.post(
            f"{self.api_url}/api/accounts",
            json={"username": username, "password": password},
            timeout=15,
        )
        assert r.status_code == 201, r.text
        mqtt_password: str = r.json()["mqtt_password"]
        assert mqtt_password != password
        self.mqtt_passwords[username] = mqtt_password
        return mqtt_password

    def buyer_probe(self, username: str) -> MqttProbe:
        """An MQTT client of a registered buyer, with its MQTT password."""
        return MqttProbe(self.broker.port, username, self.mqtt_passwords[username])

    def order(self, username: str, password: str, product_id: str, hours: float) -> dict[str, Any]:
        return place_order(self.api_url, username, password, product_id, hours)

    def wait_confirmed(
        self, username: str, password: str, order_id: str, timeout: float = 60
    ) -> dict[str, Any]:
        """The order once its status is `confirmed`."""

        def confirmed() -> dict[str, Any] | None:
            got: dict[str, Any] = httpx.get(
                f"{self.api_url}/api/orders/{order_id}", auth=(username, password), timeout=5
            ).json()
            return got if got["status"] == "confirmed" else None

        result: dict[str, Any] = wait_for(confirmed, timeout, "the order confirmed", 0.25)
        return result

    def products(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.api_url}/api/products", timeout=30)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        return found

    def payments(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.api_url}/api/payments", headers=self.admin, timeout=30)
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        return found

    def metrics(self) -> dict[str, float]:
        return scrape_metrics(f"{self.api_url}/metrics")

    def create_product(self, product_id: str, topic_filter: str, price: int) -> None:
        r = httpx.post(
            f"{self.api_url}/api/products",
            json={"id": product_id, "topic_filter": topic_filter, "price_iota_per_hour": price},
            headers=self.admin,
            timeout=15,
        )
        assert r.status_code == 201, r.text

    def create_device(self, device_id: str) -> str:
        r = httpx.post(
            f"{self.api_url}/api/devices",
            json={"device_id": device_id},
            headers=self.admin,
            timeout=15,
        )
        assert r.status_code == 201, r.text
        password: str = r.json()["password"]
        return password

    def close(self) -> None:
        if self._control is not None:
            self._control.stop()
            self._control = None
        self.proc.stop()


def place_order(
    api_url: str, username: str, password: str, product_id: str, hours: float
) -> dict[str, Any]:
    """POST /api/orders as the buyer (HTTP Basic); the created order."""
    r = httpx.post(
        f"{api_url}/api/orders",
        json={"product_id": product_id, "hours": hours},
        auth=(username, password),
        timeout=15,
    )
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    return order


def get_order(api_url: str, username: str, password: str, order_id: str) -> dict[str, Any]:
    """GET /api/orders/<id> as the buyer; the order as it stands."""
    r = httpx.get(f"{api_url}/api/orders/{order_id}", auth=(username, password), timeout=15)
    assert r.status_code == 200, r.text
    order: dict[str, Any] = r.json()
    return order


def start_auth_stack(
    workdir: Path,
    broker: procs.MosquittoHandle,
    mongo_url: str,
    node_url: str = CLOSED_PORT_URL,
    extra_env: dict[str, str] | None = None,
    wait_for_broker: bool = True,
    pool_size: int = 40,
    pool: list[str] | None = None,
    wait_for_node: bool = False,
    ready_timeout: float = 60,
) -> AuthStack:
    """broker_auth with a pool of deposit addresses: `pool`, else `pool_size` random ones.

    Started once /healthz reports MongoDB and the broker ok (and the node: `wait_for_node`), or
    once it answers at all (`wait_for_broker=False`). `extra_env` overrides any variable.
    """
    port = procs.free_port()
    token = secrets.token_urlsafe(24)
    pool = pool if pool is not None else [random_address() for _ in range(pool_size)]
    workdir.mkdir(parents=True, exist_ok=True)
    pool_file = workdir / "deposit-addresses.txt"
    pool_file.write_text("".join(f"{a}\n" for a in pool))
    env = {
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "MONGO_URL": mongo_url,
        "MONGO_DB": f"ba_{workdir.name}_{secrets.token_hex(3)}".replace("-", "_")[:60],
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(broker.port),
        "DYNSEC_ADMIN_PASSWORD": broker.admin_password,
        "BROKER_ADMIN_TOKEN": token,
        "IOTA_NODE_URL": node_url,
        "IOTA_DEPOSIT_ADDRESSES_FILE": str(pool_file),
        "SELLER_KEY_FILE": str(workdir / "seller-keys.json"),
        "IOTA_MWM": os.environ.get("IOTA_MWM", "5"),
        "WATCHER_INTERVAL_S": "0.25",
        "INFLUX_URL": CLOSED_PORT_URL,
        "RECONCILE_INTERVAL_S": "30",
        "LOG_LEVEL": "INFO",
        # Functional tests order a lot from one buyer and address; the caps and throttles on
        # orders have their own tests (tests/broker_auth/test_strangers.py) at real values.
        "MAX_UNPAID_ORDERS": "1000",
        "MAX_UNPAID_QUOTES": "1000",
        "ORDER_MAX_PER_BUYER": "100000",
        "ORDER_MAX_PER_IP": "100000",
        # Tests of confirmed payments assert access from confirmation on; instant access (on
        # by default) has its own tests (tests/broker_auth/test_instant_access.py).
        "INSTANT_ACCESS_MAX_S": "0",
        **(extra_env or {}),
    }
    stack = AuthStack(
        proc=procs.python_service(
            "broker_auth", "broker_auth", workdir, env, ready_timeout=ready_timeout
        ),
        api_url=f"http://127.0.0.1:{port}",
        broker=broker,
        admin_token=token,
        pool=pool,
        env=env,
        ready_parts=("mongo", "broker", "node") if wait_for_node else ("mongo", "broker"),
    )
    stack.proc.ready = stack.ready if wait_for_broker else lambda: stack.health() is not None
    stack.proc.start()
    return stack


def start_replica(primary: AuthStack, workdir: Path, **extra_env: str) -> AuthStack:
    """Another broker_auth process on the same broker and database as `primary` (a replica)."""
    port = procs.free_port()
    env = {**primary.env, "API_PORT": str(port), **extra_env}
    stack = AuthStack(
        proc=procs.python_service("broker_auth", "broker_auth", workdir, env, ready_timeout=60),
        api_url=f"http://127.0.0.1:{port}",
        broker=primary.broker,
        admin_token=primary.admin_token,
        pool=primary.pool,
        env=env,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    stack.proc.ready = stack.ready
    stack.proc.start()
    return stack
