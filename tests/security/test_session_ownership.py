"""An MQTT session belongs to its owner: strangers can neither take it over nor wipe it.

Real Mosquitto (the session-ownership plugin in front of dynamic security) and broker_auth on
FerretDB. A buyer registered through the API keeps a persistent session subscribed to his
`notify/<username>` at QoS 1; an ingest worker's account keeps one on its live readings. Then
strangers present the owner's client id: anonymous clients (MQTT 5 clean start, MQTT 3.1.1
clean session, MQTT 5 enhanced authentication), another buyer with his own valid password, a
device. Each must get CONNACK "not authorised" (or "bad authentication method"), the owner must
stay connected while he is there, and what was queued while he was away must be waiting when
he comes back. Anonymous persistent sessions are bounded: 10,000 abandoned ones (raw sockets,
MQTT 3.1.1 clean session off) must not grow the broker while averages are published. So are a
free buyer account's: the free averages (`avg/...`, and any wildcard filter that reaches them) are
QoS 0 for every client but services (`svc.*`), so an abandoned session of a free account queues
no average either, while a buyer keeps QoS 1 on his notifications and paid topics.

A test-only account `svc.test-notifier` publishes on `notify/#` in place of broker_auth's
notifier (whose password is private: derived from the admin password), as the ACL matrix's
observer does.
"""

from __future__ import annotations

import asyncio
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

import testing.mqtt
from broker_auth.broker import acl_model
from broker_auth.broker.acl_model import Acl, Client, Role
from ingest.settings import IngestSettings
from testing.broker_auth import AuthStack, start_auth_stack
from tests.conftest import Mongo, MosquittoFactory
from tests.security.conftest import REPORTS

NOTIFIER = "svc.test-notifier"
NOTIFIER_ROLE = "test-notifier"
DEVICE = "plug-so"
NOT_AUTHORIZED = 0x87
BAD_AUTH_METHOD = 0x8C
SESSION_EXPIRY_S = 3600


@dataclass(frozen=True)
class Login:
    name: str
    username: str | None
    password: str | None


class Session:
    """One paho MQTT client: its CONNACK, session-present flag, messages and disconnections.

    It never reconnects by itself: a session taken over must show as a disconnection."""

    def __init__(
        self,
        port: int,
        client_id: str,
        login: Login,
        *,
        clean_start: bool = False,
        protocol: MQTTProtocolVersion = mqtt.MQTTv5,
        auth_method: str | None = None,
    ) -> None:
        self.port, self.clean_start, self.protocol = port, clean_start, protocol
        self.client = testing.mqtt.client(
            client_id=client_id,
            protocol=protocol,
            clean_session=clean_start if protocol != mqtt.MQTTv5 else None,
            reconnect_on_failure=False,
        )
        if login.username is not None:
            self.client.username_pw_set(login.username, login.password)
        self.auth_method = auth_method
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.connected = threading.Event()
        self.dropped = threading.Event()
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self._answered = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.dropped.set()
        self.client.on_message = lambda _c, _u, m: self.messages.put(bytes(m.payload))
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put(
            [c.value for c in codes]
        )

    def _on_connect(
        self, _c: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: object
    ) -> None:
        self.connack, self.session_present = rc, bool(flags.session_present)
        if not rc.is_failure:
            self.connected.set()
        self._answered.set()

    def open(self, timeout: float = 5.0) -> int:
        """Connect; the CONNACK reason code (0 = accepted)."""
        props = None
        if self.protocol == mqtt.MQTTv5:
            props = testing.mqtt.session_expiry(SESSION_EXPIRY_S)
            if self.auth_method is not None:
                props.AuthenticationMethod = self.auth_method
        self.client.connect(
            "127.0.0.1",
            self.port,
            keepalive=30,
            clean_start=self.clean_start if self.protocol == mqtt.MQTTv5 else 3,
            properties=props,
        )
        self.client.loop_start()
        if not self._answered.wait(timeout):
            self.close()
            raise TimeoutError("no CONNACK")
        assert self.connack is not None
        return int(self.connack.value)

    def subscribe(self, topic: str, qos: int) -> list[int]:
        self.client.subscribe(topic, qos)
        return self.subacks.get(timeout=5)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published(), f"no PUBACK for {topic}"

    def next(self, timeout: float = 5.0) -> bytes:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Attack:
    """A stranger presenting someone's client id, with the answer the broker must give."""

    name: str
    login: Login
    protocol: MQTTProtocolVersion = mqtt.MQTTv5
    auth_method: str | None = None
    expected: int = NOT_AUTHORIZED

    def run(self, port: int, client_id: str) -> int:
        stranger = Session(
            port,
            client_id,
            self.login,
            clean_start=True,
            protocol=self.protocol,
            auth_method=self.auth_method,
        )
        try:
            return stranger.open()
        finally:
            stranger.close()


ANONYMOUS = Login("anonymous", None, None)
ANONYMOUS_ATTACKS = [
    Attack("anonymous, MQTT 5 clean start", ANONYMOUS),
    Attack("anonymous, MQTT 3.1.1 clean session", ANONYMOUS, mqtt.MQTTv311),
    # Enhanced authentication skips the password check (handle_connect.c): with no plugin
    # answering for the method, Mosquitto refuses the method itself.
    Attack("anonymous, MQTT 5 enhanced auth", ANONYMOUS, auth_method="SCRAM-SHA-256",
           expected=BAD_AUTH_METHOD),
]  # fmt: skip


@dataclass
class Shop:
    auth: AuthStack
    notifier_password: str
    device_password: str

    @property
    def port(self) -> int:
        return self.auth.broker.port

    def buyer(self, prefix: str) -> Login:
        username = f"{prefix}-{secrets.token_hex(3)}"
        return Login(prefix, username, self.auth.register(username, secrets.token_urlsafe(12)))

    def publisher(self, login: Login) -> Session:
        assert login.username is not None
        session = Session(self.port, f"{login.username}:pub-{secrets.token_hex(4)}", login,
                          clean_start=True)  # fmt: skip
        assert session.open() == 0
        return session

    @property
    def notifier(self) -> Login:
        return Login("notifier", NOTIFIER, self.notifier_password)

    @property
    def device(self) -> Login:
        return Login("device", acl_model.device_username(DEVICE), self.device_password)

    @property
    def ingest(self) -> Login:
        return Login("ingest", acl_model.INGEST_USERNAME, self.auth.broker.ingest_password)


@pytest.fixture(scope="module")
def shop(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_factory: MosquittoFactory, ferret: Mongo
) -> Iterator[Shop]:
    workdir = tmp_path_factory.mktemp("session-ownership")
    notifier_password = secrets.token_urlsafe(18)
    role = Role(NOTIFIER_ROLE, (Acl("publishClientSend", "notify/#"),), "tests: the notifier")
    broker = mosquitto_factory(
        f"{workdir.name}-mosquitto",
        extra_clients=[Client(NOTIFIER, notifier_password, (NOTIFIER_ROLE,))],
        extra_roles=[role],
    )
    auth = start_auth_stack(workdir / "broker_auth", broker, ferret.url)
    try:
        yield Shop(auth, notifier_password, auth.create_device(DEVICE))
    finally:
        auth.close()
        broker.proc.stop()


def assert_session_survives(
    shop: Shop,
    owner: Login,
    client_id: str,
    topic: str,
    publisher: Login,
    attacks: list[Attack],
) -> None:
    """The owner's persistent session against each attack, while he is connected (a takeover
    would disconnect him) and while he is away (a clean start would wipe what is queued)."""
    port = shop.port
    session = Session(port, client_id, owner)
    assert session.open() == 0, f"{owner.name} could not connect as {client_id}"
    assert session.subscribe(topic, qos=1) == [1]
    source = shop.publisher(publisher)
    try:
        for attack in attacks:
            assert attack.run(port, client_id) == attack.expected, f"{attack.name} got in"
        assert not session.dropped.wait(0.3), f"{owner.name} was disconnected by a stranger"
        source.publish(topic, b"while-connected")
        assert session.next() == b"while-connected"
        session.close()  # away: the broker keeps the session and queues QoS 1 messages

        queued = [f"queued-{i}".encode() for i in range(3)]
        for payload in queued:
            source.publish(topic, payload)
        for attack in attacks:
            assert attack.run(port, client_id) == attack.expected, f"{attack.name} got in"

        back = Session(port, client_id, owner)
        assert back.open() == 0
        try:
            assert back.session_present, f"a stranger wiped {owner.name}'s session"
            assert [back.next() for _ in queued] == queued
        finally:
            back.close()
    finally:
        source.close()


def test_anonymous_clients_cannot_take_over_a_buyers_session(shop: Shop) -> None:
    john = shop.buyer("john")
    assert john.username is not None
    topic = acl_model.notify_topic(john.username)
    assert_session_survives(
        shop, john, f"{john.username}:notes", topic, shop.notifier, ANONYMOUS_ATTACKS
    )


def test_other_accounts_cannot_take_over_a_buyers_session(shop: Shop) -> None:
    john, eve = shop.buyer("john"), shop.buyer("eve")
    assert john.username is not None
    attacks = [
        Attack("another buyer", eve),
        Attack("another buyer, MQTT 3.1.1", eve, mqtt.MQTTv311),
        Attack("a device", shop.device),
        Attack("a service", shop.ingest),
    ]
    topic = acl_model.notify_topic(john.username)
    assert_session_survives(shop, john, f"{john.username}:notes", topic, shop.notifier, attacks)


def test_strangers_cannot_take_over_a_services_session(shop: Shop) -> None:
    # The id the ingest worker derives from its settings (INGEST_CLIENT_ID, default).
    settings = IngestSettings(INGEST_MQTT_PASSWORD=shop.ingest.password)
    client_id = settings.client_id
    eve = shop.buyer("eve")
    attacks = [*ANONYMOUS_ATTACKS, Attack("a buyer", eve), Attack("a device", shop.device)]
    topic = f"live/{DEVICE}/power"
    assert_session_survives(shop, shop.ingest, client_id, topic, shop.device, attacks)


def test_a_buyers_username_needs_his_password(shop: Shop) -> None:
    john = shop.buyer("john")
    assert john.username is not None
    own_id = f"{john.username}:app"

    def answer(login: Login, client_id: str = own_id) -> int:
        session = Session(shop.port, client_id, login, clean_start=True)
        try:
            return session.open()
        finally:
            session.close()

    assert answer(Login("no password", john.username, None)) == NOT_AUTHORIZED
    assert answer(Login("empty password", john.username, "")) == NOT_AUTHORIZED
    assert answer(Login("wrong password", john.username, "not-his-password")) == NOT_AUTHORIZED
    # His password, but an id outside his namespace (or in nobody's).
    assert answer(john, f"{john.username}-app") == NOT_AUTHORIZED
    assert answer(john, "app") == NOT_AUTHORIZED
    assert answer(john) == 0


# ---- free accounts and the averages -----------------------------------------------------------


def test_a_free_account_cannot_queue_averages(shop: Shop) -> None:
    """A free buyer account subscribes `avg/#` at QoS 1 with a persistent session and leaves:
    the broker must refuse QoS 1 there (QoS 0 is his), so nothing is queued for him while
    averages are published; his notifications (QoS 1) are still kept for him."""
    eve = shop.buyer("eve")
    assert eve.username is not None
    client_id = f"{eve.username}:hoard"
    notify = acl_model.notify_topic(eve.username)
    session = Session(shop.port, client_id, eve)
    assert session.open() == 0
    asked_qos1 = session.subscribe("avg/#", qos=1)
    asked_qos2 = session.subscribe("avg/1m/#", qos=2)
    assert session.subscribe(notify, qos=1) == [1]
    averages, notifier = shop.publisher(shop.ingest), shop.publisher(shop.notifier)
    try:
        if asked_qos1 != [0]:  # refused: the free averages at QoS 0 stay his
            assert session.subscribe("avg/#", qos=0) == [0]
        averages.publish(f"avg/1m/{DEVICE}/power", b"while-connected", retain=True)
        while session.next() != b"while-connected":  # after what was retained there before
            pass
        session.close()

        published = 50
        for i in range(published):
            averages.publish(f"avg/1m/{DEVICE}/power", f"away-{i}".encode(), retain=True)
        notifier.publish(notify, b"grant_started")

        back = Session(shop.port, client_id, eve)
        assert back.open() == 0
        try:
            assert back.session_present
            got = [back.next()]
            while True:
                try:
                    got.append(back.next(timeout=1.0))
                except queue.Empty:
                    break
        finally:
            back.close()
    finally:
        averages.close()
        notifier.close()
    queued = [m for m in got if m.startswith(b"away-")]
    REPORTS.append(
        f"Free account, persistent session: SUBACK for avg/# at QoS 1 {asked_qos1}, "
        f"avg/1m/# at QoS 2 {asked_qos2}; {len(set(queued))} of {published} averages published "
        f"while away were queued for it ({len(queued)} deliveries)."
    )
    assert asked_qos1 == [NOT_AUTHORIZED], asked_qos1
    assert asked_qos2 == [NOT_AUTHORIZED], asked_qos2
    assert queued == []
    assert b"grant_started" in got  # QoS 1 where he is entitled to it


# Filter -> granted at QoS 1 for a client that is not a service (and may read everything).
WILDCARD_FILTERS = {
    "avg/#": False,
    "avg/1m/plug-1/power": False,
    "avg/1m/#": False,
    "avg/+/plug-1/power": False,
    "avg/+": False,
    "avg": False,  # `avg/#` matches `avg` itself
    "#": False,
    "+/#": False,
    "+": False,  # matches `avg`
    "+/+/+/+": False,
    "+/+/+/+/+/+": False,  # deeper than the averages, still under `avg/`
    "+/1m/#": False,
    "+/1m/+/power": False,
    "$share/g/avg/#": False,
    "$share/g/#": False,
    "$share/g/+/1m/plug-1/power": False,
    "live/plug-1/#": True,
    "live/+/power": True,
    "notify/wide": True,
    "info/#": True,
    "avgx/#": True,
    "avg1m/+/plug-1/power": True,
    "/avg/#": True,  # first level empty, not `avg`
    "+/2m/#": False,  # any window is under `avg/`
    "x/+/#": True,
    "$share/g/live/#": True,
    "$SYS/#": True,  # `$` topics are not under `avg/`
}


def test_free_averages_are_qos0_below_services_with_any_filter(
    mosquitto_factory: MosquittoFactory,
) -> None:
    """Every filter that can reach a topic under `avg/` is refused above QoS 0 to clients that
    are not services, and granted at QoS 0; other filters keep QoS 1. The client may read
    everything (dynamic security grants it all), so each answer is the plugin's."""
    wide_user, reader_user = f"wide-{secrets.token_hex(3)}", "svc.test-avg-reader"
    everything = Role(
        "test-everything",
        tuple(
            Acl(kind, topic)
            for topic in ("#", "$share/#", "$SYS/#")
            for kind in ("subscribePattern", "publishClientReceive")
        ),
        "tests: a non-service client that may read everything",
    )
    passwords = {wide_user: secrets.token_urlsafe(12), reader_user: secrets.token_urlsafe(12)}
    broker = mosquitto_factory(
        f"free-qos-{secrets.token_hex(3)}",
        extra_clients=[
            Client(wide_user, passwords[wide_user], ("test-everything",)),
            Client(reader_user, passwords[reader_user], (acl_model.ROLE_AVG_READER,)),
        ],
        extra_roles=[everything],
    )
    try:
        wide = Session(broker.port, f"{wide_user}:wild", Login("wide", wide_user,
                       passwords[wide_user]), clean_start=True)  # fmt: skip
        assert wide.open() == 0
        try:
            at_qos1 = {f: wide.subscribe(f, qos=1) for f in WILDCARD_FILTERS}
            at_qos0 = {f: wide.subscribe(f, qos=0) for f in WILDCARD_FILTERS}
            at_qos2 = wide.subscribe("avg/#", qos=2)
        finally:
            wide.close()
        wrong = [
            f"{f}: {codes}" for f, codes in at_qos1.items()
            if codes != ([1] if WILDCARD_FILTERS[f] else [NOT_AUTHORIZED])
        ]  # fmt: skip
        REPORTS.append(
            "Free averages, QoS 1 asked by a non-service client that may read everything: "
            + ", ".join(f"{f} {'granted' if c == [1] else hex(c[0])}" for f, c in at_qos1.items())
        )
        assert wrong == [], wrong
        assert at_qos0 == {f: [0] for f in WILDCARD_FILTERS}
        assert at_qos2 == [NOT_AUTHORIZED]

        # A service keeps QoS 1 (and 2) on the averages.
        reader = Session(broker.port, f"{reader_user}:avg", Login("reader", reader_user,
                         passwords[reader_user]), clean_start=True)  # fmt: skip
        assert reader.open() == 0
        try:
            assert reader.subscribe("avg/#", qos=1) == [1]
            assert reader.subscribe("avg/1m/+/power", qos=2) == [2]
        finally:
            reader.close()
    finally:
        broker.proc.stop()


# ---- abandoned anonymous sessions -------------------------------------------------------------

ABANDONED = 10_000
CONCURRENCY = 100
ROUNDS, TOPICS, PAYLOAD = 20, 10, 200  # averages published while the sessions lie abandoned


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _packet(header: int, body: bytes) -> bytes:
    length, out = len(body), bytearray([header])
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


def abandon_packets(client_id: str, login: Login = ANONYMOUS) -> bytes:
    """MQTT 3.1.1 CONNECT (clean session off: kept forever without an expiry), SUBSCRIBE to the
    averages at QoS 1 and QoS 0, DISCONNECT: the session stays, nobody comes back."""
    flags, payload = 0x00, _string(client_id.encode())
    if login.username is not None and login.password is not None:
        flags = 0xC0  # username and password
        payload += _string(login.username.encode()) + _string(login.password.encode())
    connect = _packet(0x10, _string(b"MQTT") + bytes([4, flags, 0, 60]) + payload)
    filters = _string(b"avg/#") + b"\x01" + _string(b"avg/+/+/+") + b"\x00"
    return connect + _packet(0x82, b"\x00\x01" + filters)


async def _abandon(
    port: int, client_id: str, limit: asyncio.Semaphore, login: Login = ANONYMOUS
) -> bytes:
    async with limit:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(abandon_packets(client_id, login))  # a client may send before its CONNACK
            connack = await reader.readexactly(4)
            assert connack[3] == 0, f"CONNACK {connack[3]}"
            header = await reader.readexactly(2)
            suback = await reader.readexactly(header[1])
            writer.write(b"\xe0\x00")
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()
        return suback[2:]  # the granted QoS (or 0x80) of each filter


async def abandon_sessions(port: int, count: int, login: Login = ANONYMOUS) -> list[bytes]:
    """`count` abandoned sessions, anonymous or all of one account (`<username>:gone-...`)."""
    limit = asyncio.Semaphore(CONCURRENCY)
    prefix = secrets.token_hex(3)
    owner = "" if login.username is None else f"{login.username}:"
    return await asyncio.gather(
        *(_abandon(port, f"{owner}gone-{prefix}-{i}", limit, login) for i in range(count))
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_abandoned_anonymous_sessions_stay_bounded(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(f"abandoned-{secrets.token_hex(3)}")
    try:
        assert broker.proc.popen is not None
        pid = broker.proc.popen.pid
        ingest = Login("ingest", acl_model.INGEST_USERNAME, broker.ingest_password)
        publisher = Session(broker.port, f"{acl_model.INGEST_USERNAME}:avg-pub", ingest)
        assert publisher.open() == 0
        # Something retained to read, as the ingest worker publishes averages.
        for t in range(TOPICS):
            publisher.publish(f"avg/1m/dev-{t}/power", b"x" * PAYLOAD, retain=True)
        before = rss_kib(pid)

        started = time.monotonic()
        subacks = asyncio.run(abandon_sessions(broker.port, ABANDONED))
        abandon_s = time.monotonic() - started
        assert set(subacks) == {b"\x80\x00"}, set(subacks)  # QoS 1 refused, QoS 0 granted
        time.sleep(0.5)
        abandoned = rss_kib(pid)

        for r in range(ROUNDS):
            for t in range(TOPICS):
                payload = f"{r:04d}".encode() * (PAYLOAD // 4)
                publisher.publish(f"avg/1m/dev-{t}/power", payload, retain=True)
        time.sleep(0.5)
        after = rss_kib(pid)
        publisher.close()

        per_session = (abandoned - before) * 1024 / ABANDONED
        REPORTS.append(
            f"Abandoned anonymous sessions: {ABANDONED} made in {abandon_s:.1f} s; Mosquitto "
            f"RSS {before} KiB before, {abandoned} KiB after them ({per_session:.0f} B each), "
            f"{after} KiB after {ROUNDS * TOPICS} averages published to them."
        )
        # Each abandoned session costs a fixed amount (its context, id and one subscription)...
        assert per_session < 2048, per_session
        # ...and nothing is queued for it afterwards, whatever is published.
        assert after - abandoned < 2048, (abandoned, after)
    finally:
        broker.proc.stop()


# ---- abandoned sessions of a free account -----------------------------------------------------

ACCOUNT_SESSIONS = 2_000  # one account may open any number of ids `<username>:...`


def test_abandoned_free_account_sessions_stay_bounded(shop: Shop) -> None:
    """One free buyer account, 2,000 abandoned persistent sessions (its own ids, MQTT 3.1.1
    clean session off) asking `avg/#` at QoS 1 and `avg/+/+/+` at QoS 0: QoS 1 is refused, so
    the averages published afterwards queue nothing for them."""
    mallory = shop.buyer("mallory")
    assert shop.auth.broker.proc.popen is not None
    pid = shop.auth.broker.proc.popen.pid
    publisher = shop.publisher(shop.ingest)
    try:
        for t in range(TOPICS):
            publisher.publish(f"avg/1m/free-{t}/power", b"x" * PAYLOAD, retain=True)
        time.sleep(0.5)
        before = rss_kib(pid)
        started = time.monotonic()
        subacks = asyncio.run(abandon_sessions(shop.port, ACCOUNT_SESSIONS, mallory))
        abandon_s = time.monotonic() - started
        time.sleep(0.5)
        abandoned = rss_kib(pid)
        for r in range(ROUNDS):
            for t in range(TOPICS):
                payload = f"{r:04d}".encode() * (PAYLOAD // 4)
                publisher.publish(f"avg/1m/free-{t}/power", payload, retain=True)
        time.sleep(0.5)
        after = rss_kib(pid)
    finally:
        publisher.close()
    per_session = (abandoned - before) * 1024 / ACCOUNT_SESSIONS
    REPORTS.append(
        f"Abandoned sessions of one free account: {ACCOUNT_SESSIONS} made in {abandon_s:.1f} s "
        f"(SUBACKs {sorted({s.hex() for s in subacks})}); Mosquitto RSS {before} KiB before, "
        f"{abandoned} KiB after them ({per_session:.0f} B each), {after} KiB after "
        f"{ROUNDS * TOPICS} averages published to them."
    )
    assert set(subacks) == {b"\x80\x00"}, set(subacks)  # QoS 1 refused, QoS 0 granted
    assert per_session < 2048, per_session
    assert after - abandoned < 2048, (abandoned, after)
