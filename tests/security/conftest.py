"""Fixtures for the security tests: the whole stack as real processes, plus a test-only observer.

`full_stack` (once per session, for the ACL matrix and the log audit) runs Mosquitto, FerretDB,
InfluxDB, a devnet node, broker_auth and an ingest worker, and walks the whole story
through them: devices and products created by the admin, three buyers registered, two of them
paying with the `iot-wallet` CLI from seed files (one buys a few seconds that run out). Every
secret used on the way is collected so the log audit can look for it.

The broker also knows `svc.test-observer`, a client that exists only in tests and may read every
topic (`#`, `$SYS/#`): it tells whether a publish the broker acknowledged actually went anywhere.
Service accounts (`svc.*`) are never touched by broker_auth's reconciliation.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import testing.mqtt
from broker_auth.broker.acl_model import METRICS_USERNAME, Acl, Client, Role
from stack.mqtt_probe import default_qos
from testing import procs
from testing.broker_auth import AuthStack, place_order, start_auth_stack
from testing.procs import wait_for
from tests.broker_auth.conftest import auth_stack_factory
from tests.conftest import Mongo, MosquittoFactory, Store
from tests.devnet_fixture import start_devnet
from tests.ingest.conftest import Worker, ingest_worker

__all__ = ["auth_stack_factory"]  # re-exported: modules here start their own broker_auth

OBSERVER = "svc.test-observer"
OBSERVER_ROLE = "test-observer"
DEVICE_A, DEVICE_B = "sensor-a", "sensor-b"
PRODUCT_LIVE = "a-live"  # live/sensor-a/#, 3600 iota/h: the granted buyer pays 1 h
PRODUCT_BRIEF = "a-brief"  # live/sensor-a/#, 1000 iota/s: the expired buyer pays 1.8 s
BRIEF_HOURS = 0.0005
MILESTONE_INTERVAL_S = 1

# Printed at the end of the run (pytest's terminal summary): the ACL matrix, memory figures.
REPORTS: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for report in REPORTS:
        terminalreporter.write_line("")
        for line in report.splitlines():
            terminalreporter.write_line(line)


def observer_role() -> Role:
    acls: list[Acl] = []
    for topic in ("#", "$SYS/#"):
        acls += [Acl("subscribePattern", topic), Acl("publishClientReceive", topic)]
    # It stands in for broker_auth's notifier in the ACL matrix (who may read notify/<user>).
    acls.append(Acl("publishClientSend", "notify/#"))
    return Role(OBSERVER_ROLE, tuple(acls), "tests only: sees what reached the broker")


class Mqtt:
    """A paho MQTT 5 client that records every SUBACK, PUBACK and disconnection.

    It never reconnects on its own: Mosquitto 2.0 closes the connection after refusing a
    publish, and a test must see that, not paper over it.
    """

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        # Anonymous clients may subscribe at QoS 0 only, and so may every client but services
        # to the free averages (the session-ownership plugin).
        self.username = username
        self.client = testing.mqtt.client(username, password, tag="sec", reconnect_on_failure=False)
        self.port = port
        self.connack: ReasonCode | None = None
        self.connected = threading.Event()
        self.closed = threading.Event()
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.pubacks: dict[int, ReasonCode] = {}
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
    ) -> None:
        with self._cond:
            self.connack = rc
            if not rc.is_failure:
                self.connected.set()
            self._cond.notify_all()

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, _rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.closed.set()
        with self._cond:
            self._cond.notify_all()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        with self._cond:
            self.subacks[mid] = codes
            self._cond.notify_all()

    def _on_publish(
        self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: Properties | None
    ) -> None:
        with self._cond:
            self.pubacks[mid] = rc
            self._cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def connect(self, timeout: float = 10.0) -> bool:
        """True if the broker accepted the credentials."""
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self.connack is not None, timeout)
        if self.connack is None:
            raise TimeoutError("no CONNACK")
        return not self.connack.is_failure

    def subscribe(self, topic: str, timeout: float = 10.0) -> int:
        """The SUBACK reason code (0x01 granted QoS 1, 0x00 QoS 0, 0x87 not authorized, ...):
        QoS 1, or QoS 0 for an anonymous client and for the free averages unless a service."""
        _, mid = self.client.subscribe(topic, qos=default_qos(self.username, topic))
        assert mid is not None
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self.subacks, timeout):
                raise TimeoutError(f"no SUBACK for {topic}")
            (code,) = self.subacks[mid]
        return int(code.value)

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> int | None:
        """The PUBACK reason code of a QoS 1 publish, or None if none came before the
        connection closed."""
        info = self.client.publish(topic, payload, qos=1)
        with self._cond:
            self._cond.wait_for(lambda: info.mid in self.pubacks or self.closed.is_set(), timeout)
            code = self.pubacks.get(info.mid)
        return None if code is None else int(code.value)

    def received(self) -> list[tuple[str, bytes]]:
        with self._cond:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Principal:
    name: str
    username: str | None
    password: str | None  # a buyer's login password (API, wallet); the MQTT one for others
    mqtt: str | None = None  # a buyer's MQTT password (generated by broker_auth)

    @property
    def mqtt_password(self) -> str | None:
        return self.mqtt or self.password


@dataclass
class FullStack:
    auth: AuthStack
    node: procs.Proc
    node_url: str
    faucet_url: str
    ingest: Worker
    observer_password: str
    workdir: Path
    ferret_data: Path  # FerretDB's SQLite files (broker_auth's database among others)
    principals: dict[str, Principal]
    secrets: dict[str, str]
    # Every process whose log the audit reads (the services and each wallet run).
    processes: list[procs.Proc] = field(default_factory=list)

    @property
    def broker(self) -> procs.MosquittoHandle:
        return self.auth.broker

    def api(self) -> httpx.Client:
        return self.auth.http()

    def observer(self) -> Mqtt:
        obs = Mqtt(self.broker.port, OBSERVER, self.observer_password)
        assert obs.connect(), "the observer could not connect"
        for topic in ("#", "$SYS/#"):
            assert obs.subscribe(topic) == 1
        return obs


def start_ingest(
    workdir: Path, broker: procs.MosquittoHandle, store: Store, **extra: str
) -> Worker:
    """An ingest worker process on `broker` (fast cadences from the ingest tests)."""
    client_id = f"ingest-sec-{secrets.token_hex(3)}"
    worker = ingest_worker(workdir, broker, store, client_id, **extra)
    worker.proc.start()
    return worker


def run_cli(workdir: Path, name: str, args: list[str], env: dict[str, str]) -> procs.Proc:
    """Run `python -m wallet ...` to completion as a logged process; fail on a non-zero exit."""
    proc = procs.python_service(name, "wallet", workdir, env, args)
    proc.start()
    assert proc.popen is not None
    code = proc.popen.wait(90)
    assert code == 0, f"{name} exited {code}:\n{proc.tail()}"
    return proc


def order(auth: AuthStack, who: Principal, product_id: str, hours: float) -> dict[str, Any]:
    assert who.username is not None and who.password is not None
    return place_order(auth.api_url, who.username, who.password, product_id, hours)


def pay_with_wallet(
    stack: FullStack, who: Principal, order_id: str, label: str, out: list[procs.Proc]
) -> str:
    """new-seed, faucet and pay --order --wait with the CLI; returns the seed (for the audit)."""
    assert who.username is not None and who.password is not None
    workdir = stack.workdir / f"wallet-{label}"
    workdir.mkdir(parents=True, exist_ok=True)
    seed_file = workdir / "buyer.seed"
    env = {
        "IOTA_NODE_URL": stack.node_url,
        "IOTA_FAUCET_URL": stack.faucet_url,
        "IOT_WALLET_PASSWORD": who.password,
    }
    out.append(
        run_cli(workdir, f"wallet-{label}-new", ["new-seed", "--seed-file", str(seed_file)], env)
    )
    seed = seed_file.read_text().strip()
    common = ["--seed-file", str(seed_file), "--node", stack.node_url]
    out.append(
        run_cli(workdir, f"wallet-{label}-faucet", ["faucet", *common, "--value", "100000"], env)
    )
    pay_args = ["pay", *common, "--order", order_id, "--api", stack.auth.api_url]
    pay_args += ["--username", who.username, "--wait", "--timeout", "60"]
    out.append(run_cli(workdir, f"wallet-{label}-pay", pay_args, env))
    return seed


def product_roles(auth: AuthStack, username: str) -> set[str]:
    return {r for r in auth.client_roles(username) or set() if r.startswith("product.")}


@pytest.fixture(scope="session")
def full_stack(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    ferret: Mongo,
    influx: Store,
) -> Iterator[FullStack]:
    workdir = tmp_path_factory.mktemp("security")
    observer_password = secrets.token_urlsafe(18)
    metrics_password = secrets.token_urlsafe(18)  # the $SYS exporter's, made by broker_auth
    broker = mosquitto_factory(
        "security-mosquitto",
        extra_clients=[Client(OBSERVER, observer_password, (OBSERVER_ROLE,))],
        extra_roles=[observer_role()],
    )
    net = start_devnet(workdir / "devnet", milestone_interval=MILESTONE_INTERVAL_S)
    node, node_url = net.node, net.url
    auth: AuthStack | None = None
    ingest: Worker | None = None
    try:
        auth = start_auth_stack(
            workdir / "broker_auth",
            broker,
            ferret.url,
            node_url,
            # DEBUG everywhere: the log audit must see the chattiest the services can be.
            {
                "LOG_LEVEL": "DEBUG",
                **influx.writer_env,
                "GRANTS_ACTIVE_INTERVAL_S": "1",
                "BROKER_METRICS_MQTT_PASSWORD": metrics_password,
            },
        )
        ingest = start_ingest(workdir / "ingest", broker, influx, INGEST_LOG_LEVEL="DEBUG")
        stack = FullStack(
            auth,
            node,
            node_url,
            net.faucet_url,
            ingest,
            observer_password,
            workdir,
            ferret.proc.workdir / "data",
            principals={},
            secrets={},
        )
        stack.processes += [
            broker.proc,
            auth.proc,
            node,
            net.faucet,
            ingest.proc,
            ferret.proc,
            influx.proc,
        ]
        stack.secrets["InfluxDB writer password"] = influx.credentials.writer_password
        stack.secrets["InfluxDB admin password"] = influx.credentials.admin_password
        stack.secrets["$SYS exporter's MQTT password"] = metrics_password
        wait_for(lambda: auth.client_roles(METRICS_USERNAME), 30, "the exporter's client")
        stack.principals["metrics"] = Principal("metrics", METRICS_USERNAME, metrics_password)
        _walk_the_story(stack)
        yield stack
    finally:
        if ingest is not None:
            ingest.proc.stop()
        if auth is not None:
            auth.close()
        net.stop()
        broker.proc.stop()


def _walk_the_story(stack: FullStack) -> None:
    """Devices, products, buyers, orders and wallet payments, as Jane and John would."""
    auth, broker = stack.auth, stack.broker
    p = stack.principals
    p["anonymous"] = Principal("anonymous", None, None)
    for label in ("buyer (no grant)", "buyer (grant)", "buyer (expired)"):
        username = f"{label.split('(')[1][:-1].replace(' ', '')}-{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(16)
        mqtt_password = auth.register(username, password)
        p[label] = Principal(label, username, password, mqtt_password)
        stack.secrets[f"password of {label}"] = password
        stack.secrets[f"MQTT password of {label}"] = mqtt_password
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        stack.secrets[f"Basic credentials of {label}"] = basic
    for label, device_id in (("device A", DEVICE_A), ("device B", DEVICE_B)):
        password = auth.create_device(device_id)
        p[label] = Principal(label, f"device.{device_id}", password)
        stack.secrets[f"password of {label}"] = password
    p["ingest"] = Principal("ingest", "svc.ingest", broker.ingest_password)
    p["admin"] = Principal("admin", "svc.broker-admin", broker.admin_password)
    stack.secrets["admin token"] = auth.admin_token
    stack.secrets["dynsec admin password"] = broker.admin_password
    stack.secrets["ingest password"] = broker.ingest_password
    stack.secrets["observer password"] = stack.observer_password

    auth.create_product(PRODUCT_LIVE, f"live/{DEVICE_A}/#", 3600)
    auth.create_product(PRODUCT_BRIEF, f"live/{DEVICE_A}/#", 3_600_000)
    granted, expired = p["buyer (grant)"], p["buyer (expired)"]
    live_order = order(auth, granted, PRODUCT_LIVE, 1)
    brief_order = order(auth, expired, PRODUCT_BRIEF, BRIEF_HOURS)
    assert (live_order["amount_iota"], brief_order["amount_iota"]) == (3600, 1800)

    # Both buyers pay at once, each from a fresh seed of their own.
    seeds: dict[str, str] = {}
    errors: list[BaseException] = []
    runs: list[procs.Proc] = []

    def pay(who: Principal, order_id: str, label: str) -> None:
        try:
            seeds[label] = pay_with_wallet(stack, who, order_id, label, runs)
        except BaseException as exc:  # reported below, in the fixture's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=pay, args=(granted, live_order["order_id"], "granted")),
        threading.Thread(target=pay, args=(expired, brief_order["order_id"], "expired")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    if errors:
        raise errors[0]
    stack.processes += runs
    for label, seed in seeds.items():
        stack.secrets[f"seed of the {label} buyer"] = seed

    assert granted.username and expired.username
    wait_for(
        lambda: product_roles(auth, granted.username or "") == {f"product.{PRODUCT_LIVE}"},
        20,
        "the paid grant in Mosquitto",
    )

    def expired_and_revoked() -> bool:
        r = auth.http().get("/api/grants", auth=(expired.username or "", expired.password or ""))
        o = auth.http().get(
            f"/api/orders/{brief_order['order_id']}",
            auth=(expired.username or "", expired.password or ""),
        )
        return (
            r.json() == []
            and o.json()["confirmed_iota"] == brief_order["amount_iota"]
            and not product_roles(auth, expired.username or "")
        )

    wait_for(expired_and_revoked, 25, "the brief grant to be paid and run out")
    # Jane looks at the payments (admin), as she would in the portal.
    r = auth.http().get("/api/payments", headers=auth.admin)
    assert r.status_code == 200
    credited = {p["order_id"] for p in r.json() if p["credited"]}
    assert {live_order["order_id"], brief_order["order_id"]} <= credited
