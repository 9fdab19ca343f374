"""The chaos of the soak: a killer, buyers who pay and renew through it, and a grant watch.

- `Killer`: every `interval_s`, one process of the stack picked at random (seeded; rounds of a
  shuffled list, so every process is killed about as often as the others) gets SIGKILL
  and is started again `restart_after_s` later on the same port and data, as supervisord or
  Docker would (`restart: unless-stopped`); each kill is kept with when the process was back.
- `Shop`: the buyer's side of the API over every broker_auth replica (a replica that does not
  answer, or answers 5xx, is skipped; the call is retried until its deadline).
- `Buyer`: signs up, then round after round orders `buy_s` seconds of the product, pays it from
  an address funded before the run, and either renews before the end (the time stacks) or lets
  the grant end and buys again later; every payment is kept for the ledger check. As an app
  would, it learns of a renewal's credit from its `notify/<username>` topic (`Notices`), and
  reads its order every `CREDIT_POLL_S` only in case a notice was lost (a broker restart).
- `GrantWatch`: once a second, every grant's end (admin API) and, for each buyer whose grant
  has ended, whether Mosquitto still gives that buyer's client the product's role: how long past
  its end a grant stayed in the broker.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
from iota import Address
from paho.mqtt.packettypes import PacketTypes

from bench import harness
from testing.mqtt import client, session_expiry, subscribe_on_connect, wait_for_access

T = TypeVar("T")
# Kill candidates: the seller's processes. The devnet's coordinator node stands for the IOTA
# network (in production a public node's milestones), the simulator for the devices.
SPARED = ("hornet-coordinator", "simulator")


RESTART_FOR_S = 600.0  # how long a killed process is started again before it counts as lost


@dataclass
class Kill:
    name: str
    at: float
    back_at: float | None = None
    attempts: int = 0  # starts it took
    error: str | None = None  # the last failed start's


class Killer:
    def __init__(
        self, stack: harness.Stack, interval_s: float, restart_after_s: float, seed: int
    ) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.restart_after_s = restart_after_s
        self.rng = random.Random(seed)
        self.kills: list[Kill] = []
        self.began = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="killer", daemon=True)

    def candidates(self) -> list[str]:
        return sorted(n for n in self.stack.processes() if n not in SPARED)

    def start(self) -> Killer:
        self.began = time.time()
        self._thread.start()
        return self

    def stop(self) -> list[Kill]:
        self._stop.set()
        self._thread.join(180)
        return self.kills

    def _run(self) -> None:
        # Rounds of every candidate in a random order: each is killed as often as the others
        # (give or take one), none twice in a row within a round.
        order: list[str] = []
        while not self._stop.wait(self.interval_s):
            if not order:
                order = self.candidates()
                self.rng.shuffle(order)
            self.kill_and_restart(order.pop())

    def kill_and_restart(self, name: str) -> Kill:
        proc = self.stack.processes()[name]
        kill = Kill(name, time.time())
        self.kills.append(kill)
        proc.kill()
        print(f"chaos: SIGKILL {name} at +{kill.at - self.began:.0f} s", flush=True)
        time.sleep(self.restart_after_s)
        # Again and again, as supervisord and Docker do: a start may fail while the machine or
        # a dependency is slow (broker_auth exits when MongoDB times out at its start).
        deadline = time.monotonic() + RESTART_FOR_S
        while True:
            kill.attempts += 1
            try:
                proc.start()
                kill.back_at = time.time()
                return kill
            except Exception as exc:
                kill.error = f"start {kill.attempts}: {type(exc).__name__}: {exc}"[:300]
                proc.kill()
                if time.monotonic() > deadline:
                    return kill  # recorded: the soak goes on without it
                time.sleep(self.restart_after_s)


class Shop:
    """The buyers' and the seller's API calls, over every broker_auth replica."""

    def __init__(self, stack: harness.Stack, deadline_s: float = 120.0) -> None:
        self.urls = [a.api_url for a in (stack.auth, *stack.replicas)]
        self.admin = stack.auth.admin
        self.deadline_s = deadline_s
        self.retries = 0  # rounds in which no replica answered
        # Attempts that failed (no answer in 10 s, a refused connection, a 5xx) and were sent
        # again: a POST among them may have been carried out twice.
        self.failed_attempts = 0
        # Kept connections (a client per call would cost the benchmark a TLS context each).
        self.http = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=64))

    def call(
        self, method: str, path: str, expect: int, deadline_s: float | None = None, **kw: Any
    ) -> Any:
        deadline = time.monotonic() + (deadline_s or self.deadline_s)
        last = ""
        while True:
            for url in self.urls:
                try:
                    r = self.http.request(method, url + path, **kw)  # timeout=: per call
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}"
                    self.failed_attempts += 1
                    continue
                if r.status_code == expect:
                    return r.json() if r.content else None
                if r.status_code < 500:
                    raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:200]}")
                last = f"{r.status_code} {r.text[:200]}"
                self.failed_attempts += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} {path}: no replica answered ({last})")
            self.retries += 1
            time.sleep(0.5)

    def all_grants(self) -> list[dict[str, Any]]:
        grants: list[dict[str, Any]] = self.call(
            "GET", "/api/grants/all", 200, deadline_s=5, headers=self.admin
        )
        return grants


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# How often a waiting buyer tries its subscription again, and reads its order. Every 20 ms (a
# fresh connection each: a password hash for Mosquitto) cost the soak's harness a whole core and
# piled up exactly while the stack was slow (a kill): the figures then measured the harness.
ACCESS_POLL_S = 0.25
CREDIT_POLL_S = 5.0  # the order read back only in case its notice was lost


@dataclass
class Notice:
    event: str
    product_id: str
    expires_at: float
    received_at: float


class Notices:
    """A buyer's `notify/<username>` feed, kept while the soak runs: QoS 1 on a persistent
    session, so what is sent while the client is away (a grant's role change kicks it; a broker
    restart) comes when paho has reconnected."""

    def __init__(self, port: int, username: str, password: str) -> None:
        self.topic = f"notify/{username}"
        self.received: list[Notice] = []
        self._arrived = threading.Condition()
        self._client = client(username, password, tag="soak-notify")
        subscribe_on_connect(self._client, self.topic, qos=1)
        self._client.on_message = self._on_message
        session = session_expiry(3600)
        self._client.connect_async(
            "127.0.0.1", port, keepalive=30, clean_start=False, properties=session
        )
        self._client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
            notice = Notice(
                str(body["event"]),
                str(body["product_id"]),
                parse_time(str(body["expires_at"])),
                time.time(),
            )
        except (ValueError, KeyError, TypeError):
            return  # not a notice of ours: the soak judges orders, not the notifier's format
        with self._arrived:
            self.received.append(notice)
            self._arrived.notify_all()

    def wait_extended(
        self, product_id: str, beyond: float, since: float, timeout: float
    ) -> float | None:
        """When a `grant_extended` notice for `product_id` ending after `beyond` arrived
        after `since` (the payment left then: no earlier notice is its credit), or None within
        `timeout`."""

        def arrived() -> float | None:
            told = (
                n.received_at
                for n in self.received
                if n.event == "grant_extended"
                and n.product_id == product_id
                and n.expires_at > beyond
                and n.received_at >= since
            )
            return next(told, None)

        with self._arrived:
            self._arrived.wait_for(lambda: arrived() is not None, timeout)
            return arrived()

    def close(self) -> None:
        """Disconnect and end the session (the broker would keep queuing for it an hour)."""
        end = session_expiry(0, PacketTypes.DISCONNECT)
        self._client.disconnect(properties=end)
        self._client.loop_stop()


@dataclass
class Purchase:
    username: str
    order_id: str
    address: str
    amount: int
    bundle: str
    sent_at: float
    renewal: bool  # the buyer's grant was still running
    access_at: float | None = None  # a first purchase: SUBACK granted
    credited_at: float | None = None  # a renewal: the order seen credited
    credit_seen_by: str | None = None  # "notice" (notify/<username>) or "order" (read back)
    error: str | None = None


@dataclass
class Buyer:
    shop: Shop
    stack: harness.Stack
    wallet: harness.Wallet
    clock: harness.ConfirmationClock
    sources: Iterator[Address]
    product: str
    topic: str
    buy_s: float
    username: str
    rng: random.Random
    stop: threading.Event
    purchases: list[Purchase] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    mqtt_password: str = ""  # given at sign-up
    notices: Notices | None = None  # its notify/<username> feed, from sign-up
    # Unpaid orders it did not know (a POST retried on another replica after a timeout or a
    # kill may have been created twice), cancelled when the shop said all places were held.
    strays_cancelled: int = 0
    _known: set[str] = field(default_factory=set, repr=False)  # orders it was answered for
    # Each buyer comes from an address of its own (X-Forwarded-For, trusted from loopback), so
    # the production throttles per address apply as they would.
    client_ip: str = "10.0.0.1"
    on_paid: Callable[[str, float, bool], None] | None = None  # (username, sent at, renewal)
    _token: str = field(default="", repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def _from(self) -> dict[str, str]:
        return {"X-Forwarded-For": self.client_ip}

    @property
    def _as_buyer(self) -> dict[str, str]:
        return {**self._from, "Authorization": f"Bearer {self._token}"}

    def _log_in(self) -> None:
        """A session token, as an app uses (HTTP Basic checks the password on every call)."""
        body = {"username": self.username, "password": harness.BUYER_PASSWORD}
        self._token = self.shop.call("POST", "/api/sessions", 201, json=body, headers=self._from)[
            "token"
        ]

    def start(self, at: float) -> None:
        """Buy in a thread of its own from `at` (wall time) until `stop`."""
        self._thread = threading.Thread(target=self.run, args=(at,), daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self, start_at: float) -> None:
        if self.stop.wait(max(0.0, start_at - time.time())):
            return
        try:
            body = {"username": self.username, "password": harness.BUYER_PASSWORD}
            self.mqtt_password = self.shop.call(
                "POST", "/api/accounts", 201, json=body, headers=self._from
            )["mqtt_password"]
            self._log_in()
        except Exception as exc:
            self.errors.append(f"sign-up: {type(exc).__name__}: {exc}")
            return
        self.notices = Notices(self.stack.broker.port, self.username, self.mqtt_password)
        try:
            self._buy_until_stopped()
        finally:
            self.notices.close()

    def _buy_until_stopped(self) -> None:
        ends_at = 0.0
        while not self.stop.is_set():
            try:
                ends_at = self.buy_once(renewal=ends_at > time.time(), ends_at=ends_at)
            except StopIteration:
                return  # no funded address left
            except Exception as exc:  # kept; the buyer goes on with the next round
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                self.stop.wait(2)
                continue
            if self.rng.random() < 0.6:  # renew while the grant runs
                wake = ends_at - self.rng.uniform(0.2, 0.5) * self.buy_s
            else:  # let it end, buy again later
                wake = ends_at + self.rng.uniform(5, 30)
            self.stop.wait(max(0.0, wake - time.time()))

    def buy_once(self, renewal: bool, ends_at: float = 0.0) -> float:
        """One order paid (`ends_at`: the grant's end before it); returns when the grant
        ends."""
        try:
            order = self.shop.call(
                "POST",
                "/api/orders",
                201,
                json={"product_id": self.product, "hours": self.buy_s / 3600},
                headers=self._as_buyer,
            )
        except RuntimeError as exc:
            if " 429 " in str(exc) and "unpaid" in str(exc):
                self._cancel_strays()  # as the 429 says: cancel one; the next round orders
            raise
        self._known.add(order["order_id"])
        # A funded address only for an order that exists: a refused order (429) spends none.
        source = next(self.sources)
        signed = self.wallet.sign(source, order["address"], order["tag"], order["amount_iota"])
        leaving_at = time.time()  # no notice before this is this payment's credit
        if self.on_paid is not None:  # before it leaves: access may follow at once
            self.on_paid(self.username, leaving_at, renewal)
        try:
            tail = retry(lambda: self.wallet.send(signed), 120)
        except Exception:
            self._cancel(order["order_id"])  # as an app would: its unpaid place comes back
            raise
        p = Purchase(
            self.username,
            order["order_id"],
            order["address"],
            order["amount_iota"],
            signed.bundle_hash,
            time.time(),
            renewal,
        )
        self.purchases.append(p)
        self.clock.watch(signed.bundle_hash, tail)
        try:
            if renewal:
                # Credited: the grant reaches past its end by more than half of the time
                # bought (a stray notice of an earlier purchase does not count).
                seen = self._wait_credited(order["order_id"], ends_at + self.buy_s / 2, leaving_at)
                if seen is not None:
                    p.credited_at, p.credit_seen_by = seen
            else:
                p.access_at = retry(self._access, 240)
        except Exception as exc:  # kept on the purchase: the soak says what became of it
            p.error = f"{type(exc).__name__}: {exc}"[:200]
            raise
        grants = self.shop.call("GET", "/api/grants", 200, headers=self._as_buyer)
        ends = [parse_time(g["expires_at"]) for g in grants if g["product_id"] == self.product]
        return max(ends, default=time.time())

    def _cancel_strays(self) -> None:
        """Cancel the orders nothing was sent to: created by a request the buyer saw fail."""
        orders = self.shop.call("GET", "/api/orders", 200, headers=self._as_buyer)
        for o in orders:
            if o["status"] == "pending" and o["order_id"] not in self._known:
                with contextlib.suppress(Exception):
                    self.shop.call(
                        "DELETE", f"/api/orders/{o['order_id']}", 204, headers=self._as_buyer
                    )
                    self.strays_cancelled += 1

    def _cancel(self, order_id: str) -> None:
        """Cancel an order the payment did not leave for; a 409 (it left after all) keeps it."""
        with contextlib.suppress(Exception):
            self.shop.call("DELETE", f"/api/orders/{order_id}", 204, headers=self._as_buyer)

    def _access(self) -> float:
        access = wait_for_access(
            *(self.stack.broker.port, self.username, self.mqtt_password, self.topic),
            timeout=60,
            period=ACCESS_POLL_S,
        )
        access.probe.close()
        return access.granted_at

    def _wait_credited(
        self, order_id: str, beyond: float, since: float
    ) -> tuple[float, str] | None:
        """When and how the credit was seen (its `grant_extended` notice, or the order read
        back in case the notice was lost); None if the soak ended first."""
        assert self.notices is not None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.stop.is_set():
                return None
            told = self.notices.wait_extended(self.product, beyond, since, CREDIT_POLL_S)
            if told is not None:
                return told, "notice"
            order = self.shop.call("GET", f"/api/orders/{order_id}", 200, headers=self._as_buyer)
            if order.get("confirmed_iota", 0) >= order["amount_iota"]:
                return time.time(), "order"
        raise TimeoutError(f"order {order_id} not credited within 240 s")


def retry(fn: Callable[[], T], seconds: float) -> T:
    """`fn()` again every second while it raises (a process of the stack is restarting)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@dataclass
class Overdue:
    username: str
    ends_at: float
    last_seen_granted: float  # the role seen in Mosquitto this late (a lower bound)
    gone_seen: float | None = None  # first seen without it (an upper bound)
    renewed: bool = False  # a renewal sent before the end extended it (not counted as late)


class GrantWatch:
    """How long past its end each grant stayed in the broker, looked at once a second."""

    def __init__(self, shop: Shop, stack: harness.Stack, role: str, product: str) -> None:
        self.shop = shop
        self.stack = stack
        self.role = role
        self.product = product
        self.ends: dict[str, float] = {}  # username -> the latest end seen
        self.watching: dict[str, Overdue] = {}
        self.done: list[Overdue] = []
        self._closed: set[tuple[str, float]] = set()
        self.misses = 0  # rounds the API or the broker did not answer
        self._paid: dict[str, list[tuple[float, bool]]] = {}  # username -> (sent, renewal)
        self._lock = threading.Lock()

    def paid(self, username: str, at: float, renewal: bool) -> None:
        """A buyer sent a payment (the buyers' threads call this)."""
        with self._lock:
            self._paid.setdefault(username, []).append((at, renewal))

    def _renewed_in_time(self, watched: Overdue) -> bool:
        """A renewal sent before the end (its credit may land after it): not a late revocation."""
        with self._lock:
            sent = list(self._paid.get(watched.username, []))
        return any(r and watched.ends_at - 300 < at <= watched.ends_at for at, r in sent)

    def _bought_again(self, watched: Overdue, by: float) -> bool:
        """The buyer paid again after the end: from then on a role may be the new purchase's."""
        with self._lock:
            sent = list(self._paid.get(watched.username, []))
        return any(watched.ends_at < at <= by for at, _ in sent)

    def _refresh_ends(self) -> None:
        for g in self.shop.all_grants():
            if g["product_id"] != self.product:
                continue
            end = parse_time(g["expires_at"])
            user = g["username"]
            if end > self.ends.get(user, 0.0):
                self.ends[user] = end
                watched = self.watching.pop(user, None)
                if watched is not None:  # a later grant: only a timely renewal is excused
                    watched.renewed = self._renewed_in_time(watched)
                    self.done.append(watched)

    def poll(self) -> None:
        try:
            self._refresh_ends()
            now = time.time()
            for user, end in self.ends.items():
                if end < now and user not in self.watching and (user, end) not in self._closed:
                    self._closed.add((user, end))
                    self.watching[user] = Overdue(user, end, end)
            control = self.stack.auth.control()
            for user, watched in list(self.watching.items()):
                asked = time.time()
                if self.role in {r["rolename"] for r in _roles(control.get_client(user))}:
                    if self._bought_again(watched, asked):
                        # Seen this late at least (last_seen_granted); past this, it may be
                        # the new purchase's access: the entry closes, counted.
                        self.done.append(self.watching.pop(user))
                    else:
                        watched.last_seen_granted = asked
                else:
                    watched.gone_seen = asked
                    self.done.append(self.watching.pop(user))
        except Exception:
            self.misses += 1

    def results(self) -> list[Overdue]:
        return [*self.done, *self.watching.values()]


def _roles(client: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list(client.get("roles", [])) if client else []
