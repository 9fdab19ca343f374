"""Load while a process is killed: devices publishing, a buyer paying, a sampler of health.

- `Devices`: devices (testing.devices) publishing at QoS 1, one reading per tick with a
  strictly increasing millisecond timestamp per series. A reading counts as accepted by the
  broker when its PUBACK arrives with a success code (paho re-sends unacknowledged readings
  after a reconnect).
- `Payer`: a buyer paying orders one after another (a fresh faucet-funded seed per payment)
  with wallet.payments; API or node errors are retried, a payment that failed half-way is
  marked ambiguous (the tangle says whether it happened).
- `Sampler`: every 0.1 s, broker_auth's /healthz, the ingest worker's buffer depth and time
  of its last store write, and the devices' unacknowledged readings.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from iota import Address, Iota
from iota.crypto.types import Seed

from testing.devices import Device
from tests.faults.stack import FaultStack
from wallet import payments


def _ticking_device(
    port: int, device: str, password: str, sensor: str
) -> tuple[Device, Callable[[int], None]]:
    """A connected device and its tick: one reading with a strictly increasing millisecond
    timestamp per series, which is also the reading's key."""
    dev = Device(port, device, password, sensor=sensor, tag="fault", reconnect_delay=(1, 2))
    last_ts = 0

    def tick(_n: int) -> None:
        nonlocal last_ts
        ts = max(int(time.time() * 1000), last_ts + 1)
        last_ts = ts
        dev.publish(json.dumps({"value": ts % 1000, "ts": ts}), key=ts)

    return dev.connect(keepalive=10), tick


class Devices:
    """Devices publishing `live/<device>/<sensor>` at `rate_hz` each, QoS 1."""

    def __init__(self, stack: FaultStack, sensor: str, devices: dict[str, str], rate_hz: float):
        self.sensor = sensor
        self.period = 1.0 / rate_hz
        self._ticking = [
            _ticking_device(stack.broker.port, d, pw, sensor) for d, pw in devices.items()
        ]
        self.devices = [d for d, _ in self._ticking]

    def start(self) -> Devices:
        for d, tick in self._ticking:
            d.start(self.period, tick)
        return self

    def stop(self, drain_timeout: float = 20.0) -> None:
        for d in self.devices:
            d.stop()
            deadline = time.monotonic() + drain_timeout
            while d.outstanding() > 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            d.close()

    def outstanding(self) -> int:
        return sum(d.outstanding() for d in self.devices)

    def accepted(self) -> dict[str, list[int]]:
        return {d.device_id: d.accepted_keys() for d in self.devices}

    def sent(self) -> dict[str, list[int]]:
        return {d.device_id: d.sent_keys() for d in self.devices}


@dataclass
class Paid:
    order_id: str
    tag: str
    amount: int
    bundle_hash: str | None  # None: the payment failed half-way (ambiguous)
    at: float  # when pay() returned
    started: float = 0.0  # when the buyer began paying (funding a fresh seed first)


@dataclass
class Payer:
    """One buyer paying orders of `product` back to back in a thread."""

    stack: FaultStack
    auth: tuple[str, str]
    product: str
    seconds: float
    orders: list[dict[str, Any]] = field(default_factory=list)  # created, not yet paid
    created: list[dict[str, Any]] = field(default_factory=list)  # every order of the buyer
    paid: list[Paid] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="payer")

    def prepare(self, n: int) -> Payer:
        """Create orders ahead, so payments go on while the API is down."""
        for _ in range(n):
            self.orders.append(self.order())
        return self

    def order(self) -> dict[str, Any]:
        order = self.stack.create_order(self.auth, self.product, self.seconds)
        self.created.append(order)
        return order

    def start(self) -> Payer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if not self._thread.is_alive():
            return
        self._thread.join(60)
        assert not self._thread.is_alive(), "payer did not finish its payment"

    def pay_one(self, order: dict[str, Any]) -> Paid:
        started = time.time()
        seed = Seed.random()
        while True:  # nothing is paid until the funds are there: retry freely
            try:
                payments.fund_from_faucet(
                    self.stack.faucet_url, self.stack.node_url, seed, order["amount_iota"]
                )
                break
            except Exception as exc:
                self._note(exc)
                if self._stop.wait(0.3):
                    raise
        try:
            result = payments.pay(
                self.stack.node_url,
                seed,
                order["address"],
                order["tag"],
                order["amount_iota"],
            )
            paid = Paid(
                order["order_id"], order["tag"], order["amount_iota"], result.bundle_hash, 0
            )
        except Exception as exc:
            self._note(exc)
            paid = Paid(order["order_id"], order["tag"], order["amount_iota"], None, 0)
        paid.at = time.time()
        paid.started = started
        self.paid.append(paid)
        return paid

    def _note(self, exc: Exception) -> None:
        self.errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    def _next_order(self) -> dict[str, Any] | None:
        if self.orders:
            return self.orders.pop(0)
        while not self._stop.is_set():
            try:
                return self.order()
            except (AssertionError, httpx.HTTPError) as exc:  # API down or degraded
                self.errors.append(f"order: {str(exc)[:120]}")
                self._stop.wait(0.3)
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            order = self._next_order()
            if order is None:
                return
            try:
                self.pay_one(order)
            except Exception:  # stopped while funding: nothing was paid
                return


def ledger_truth(stack: FaultStack, orders: list[dict[str, Any]]) -> dict[str, int]:
    """What the node's ledger confirms on each order's own address: order id -> iota."""
    api = Iota(stack.node_url)
    truth: dict[str, int] = {}
    for start in range(0, len(orders), 500):
        chunk = orders[start : start + 500]
        balances = api.get_balances([Address(o["address"].encode()) for o in chunk])["balances"]
        truth.update((o["order_id"], int(b)) for o, b in zip(chunk, balances, strict=True))
    return truth


@dataclass
class Sample:
    at: float  # wall time
    buffer_depth: float | None
    last_stored: float | None  # wall time of the worker's last store write
    device_queue: int


class Sampler:
    """Two threads, so a slow /healthz (MongoDB down: it waits for a ping) does not thin out
    the ingest samples."""

    def __init__(self, stack: FaultStack, devices: Devices, interval: float = 0.1) -> None:
        self.stack = stack
        self.devices = devices
        self.interval = interval
        self.samples: list[Sample] = []
        self.health: list[tuple[float, int | None]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run_ingest, daemon=True, name="sampler-ingest"),
            threading.Thread(target=self._run_health, daemon=True, name="sampler-health"),
        ]

    def start(self) -> Sampler:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)

    def _run_ingest(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            m = self.stack.ingest_metrics()
            self.samples.append(
                Sample(
                    at,
                    m.get("ingest_buffer_depth") if m else None,
                    m.get("ingest_last_stored_timestamp_seconds") if m else None,
                    self.devices.outstanding(),
                )
            )
            self._stop.wait(self.interval)

    def _run_health(self) -> None:
        while not self._stop.is_set():
            at = time.time()
            self.health.append((at, self.stack.healthz()))
            self._stop.wait(self.interval)

    def first_stored_after(self, after: float) -> float | None:
        """When the sampler first saw a store write later than `after`."""
        for s in self.samples:
            if s.at >= after and (s.last_stored or 0) > after:
                return s.at
        return None
