"""Who may do what on the broker, measured: every principal against every topic class.

Against the real Mosquitto that broker_auth drives (grants bought on the devnet), each principal
subscribes to each filter (SUBACK granted or refused, and whether a message published there
then reaches it) and publishes at QoS 1 to each topic on a fresh connection (the PUBACK reason
code, whether the broker closed the connection, and whether the message reached anyone: a
test-only observer reading `#` and `$SYS/#` tells, and for `$CONTROL` whether the plugin ran the
command). The expected matrix is the design's "Topics" section:

- anonymous: subscribe `avg/#` and `info/#` only; buyers: those plus their active grants and
  `notify/<their own username>` (nobody else's, and not `notify/#`); nobody here publishes to
  `info/` (broker_auth's notifier keeps the seller's key retained there);
- a device publishes only to `live/<its id>/#`; the ingest worker reads `live/#` and publishes
  `avg/#`; only the admin client uses `$CONTROL` (its grant is `$CONTROL/dynamic-security/#`,
  so even it may not subscribe to all of `$CONTROL/#`); only the `$SYS` exporter's login
  (`svc.metrics`) reads `$SYS/broker/#`, and nothing else; nobody publishes to `$SYS`.

The measured matrix is printed at the end of the run.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import paho.mqtt.client as mqtt

import testing.mqtt
from testing.procs import wait_for
from tests.security.conftest import DEVICE_A, DEVICE_B, REPORTS, FullStack, Mqtt, Principal

NOT_AUTHORIZED = 0x87
# Column label -> subscription filter.
SUBSCRIBE = {
    "live/A/x": f"live/{DEVICE_A}/x",
    "live/B/x": f"live/{DEVICE_B}/x",
    "avg/#": "avg/#",
    "$CONTROL/#": "$CONTROL/#",
    "$CONTROL/dynsec/#": "$CONTROL/dynamic-security/#",
    "$SYS/#": "$SYS/#",
    # Mosquitto's figures (retained): iot-broker-metrics' only.
    "$SYS/broker/#": "$SYS/broker/#",
    "notify/<buyer>": "notify/{buyer}",  # the notifications of "buyer (grant)"
    "notify/#": "notify/#",
    # What ingest workers forward to the averager: raw readings, the ingest role's only.
    "ingest/accepted": "ingest/accepted",
    "$share/g/live/A/x": f"$share/g/live/{DEVICE_A}/x",
    # The shop's public facts, retained by broker_auth's notifier (the seller's key).
    "info/#": "info/#",
}
# Column label -> topic published to.
PUBLISH = {
    "live/A/x": f"live/{DEVICE_A}/x",
    "live/B/x": f"live/{DEVICE_B}/x",
    "avg/1m/A/x": f"avg/1m/{DEVICE_A}/x",
    "$CONTROL/dynsec/v1": "$CONTROL/dynamic-security/v1",
    "$SYS/test": "$SYS/security-test/x",
    "notify/<buyer>": "notify/{buyer}",
    # A forged batch here would poison the free averages: the ingest role's only.
    "ingest/accepted": "ingest/accepted",
    # A forged seller key would make buyers seal their logins to someone else.
    "info/seller-key": "info/seller-key",
}
ALLOWED_SUBSCRIBE: dict[str, set[str]] = {
    "anonymous": {"avg/#", "info/#"},
    "buyer (no grant)": {"avg/#", "info/#"},
    "buyer (grant)": {"avg/#", "info/#", "live/A/x", "notify/<buyer>"},
    "buyer (expired)": {"avg/#", "info/#"},
    "device A": set(),
    "device B": set(),
    "ingest": {"live/A/x", "live/B/x", "ingest/accepted", "$share/g/live/A/x"},
    "admin": {"$CONTROL/dynsec/#"},
    "metrics": {"$SYS/broker/#"},
}
ALLOWED_PUBLISH: dict[str, set[str]] = {
    "anonymous": set(),
    "buyer (no grant)": set(),
    "buyer (grant)": set(),
    "buyer (expired)": set(),
    "device A": {"live/A/x"},
    "device B": {"live/B/x"},
    "ingest": {"avg/1m/A/x", "ingest/accepted"},
    "admin": {"$CONTROL/dynsec/v1"},
    "metrics": set(),
}


@dataclass
class SubCell:
    code: int
    received: bool

    @property
    def granted(self) -> bool:
        return self.code < 0x80

    def text(self) -> str:
        if self.granted:
            return f"0x{self.code:02x} rx" if self.received else f"0x{self.code:02x} NO-rx"
        return f"0x{self.code:02x}" + (" RX!" if self.received else "")


@dataclass
class PubCell:
    code: int | None  # PUBACK reason; None: no PUBACK at all
    closed: bool  # the broker closed the connection afterwards
    delivered: bool = False

    def text(self) -> str:
        code = "none" if self.code is None else f"0x{self.code:02x}"
        return f"{code}{' closed' if self.closed else ''}{' DLV' if self.delivered else ' -'}"


def connect(stack: FullStack, who: Principal) -> Mqtt:
    client = Mqtt(stack.broker.port, who.username, who.mqtt_password)
    assert client.connect(), f"{who.name} could not connect"
    return client


def resolved(table: dict[str, str], stack: FullStack) -> dict[str, str]:
    """The columns' topics, with the granted buyer's username filled in."""
    buyer = stack.principals["buyer (grant)"].username
    return {label: topic.format(buyer=buyer) for label, topic in table.items()}


def subscribe_row(
    stack: FullStack, who: Principal, filters: dict[str, str]
) -> tuple[Mqtt, dict[str, int]]:
    client = connect(stack, who)
    return client, {label: client.subscribe(f) for label, f in filters.items()}


def reached(
    label: str, codes: dict[str, int], got: list[tuple[str, bytes]], filters: dict[str, str]
) -> bool:
    """Did a message reach the client through this subscription? A refused filter "receives"
    only what no granted filter of the same connection explains."""
    granted = [_unshared(filters[c]) for c, code in codes.items() if code < 0x80]
    return any(
        mqtt.topic_matches_sub(_unshared(filters[label]), topic)
        and (codes[label] < 0x80 or not any(mqtt.topic_matches_sub(g, topic) for g in granted))
        for topic, _ in got
    )


def _unshared(topic_filter: str) -> str:
    """`$share/<group>/<filter>` matches what <filter> matches."""
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter


def control_command(rolename: str) -> bytes:
    return json.dumps({"commands": [{"command": "createRole", "rolename": rolename}]}).encode()


def publish_cell(stack: FullStack, who: Principal, topic: str, payload: bytes) -> PubCell:
    client = connect(stack, who)
    try:
        code = client.publish(topic, payload)
        # Mosquitto 2.0 closes the connection right after a refused QoS 1 publish.
        closed = client.closed.wait(2.0) if code is None or code >= 0x80 else False
        return PubCell(code, closed)
    finally:
        client.close()


def render(
    subs: dict[str, dict[str, SubCell]], pubs: dict[str, dict[str, PubCell]], wrong: list[str]
) -> str:
    head = ["principal"] + [f"sub {c}" for c in SUBSCRIBE] + [f"pub {c}" for c in PUBLISH]
    rows = [head]
    for name in ALLOWED_SUBSCRIBE:
        rows.append(
            [name]
            + [subs[name][c].text() for c in SUBSCRIBE]
            + [pubs[name][c].text() for c in PUBLISH]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    legend = (
        "sub: SUBACK reason (0x01 granted QoS 1, 0x00 QoS 0 as anonymous clients ask, and all "
        "but services on avg/, 0x87 not authorized); rx = a message published "
        "there reached the subscriber.\npub: PUBACK reason of a QoS 1 publish on a fresh "
        "connection; closed = the broker then closed the connection; DLV = delivered (seen by "
        "the observer, or the $CONTROL command was executed), - = dropped."
    )
    title = "ACL matrix (Mosquitto 2.0 dynamic security, driven by broker_auth), measured:"
    mismatches = "\n".join(wrong) if wrong else "all cells as the design says"
    return f"{title}\n" + "\n".join(lines) + f"\n{legend}\n{mismatches}"


def test_acl_matrix(full_stack: FullStack) -> None:
    stack = full_stack
    p = stack.principals
    observer = stack.observer()
    nonce = secrets.token_hex(4)

    filters, topics = resolved(SUBSCRIBE, stack), resolved(PUBLISH, stack)
    # -- subscriptions: one connection per principal, every filter, then traffic on each ----
    rows = {name: subscribe_row(stack, p[name], filters) for name in ALLOWED_SUBSCRIBE}
    feeds: list[tuple[str, str, bytes]] = [
        ("device A", PUBLISH["live/A/x"], f"1.{nonce}1".encode()),
        ("device B", PUBLISH["live/B/x"], f"2.{nonce}2".encode()),
        ("ingest", PUBLISH["avg/1m/A/x"], f"3.{nonce}3".encode()),
        ("ingest", PUBLISH["ingest/accepted"], f"5.{nonce}5".encode()),
        # Any command makes the plugin answer on $CONTROL/dynamic-security/v1/response.
        (
            "admin",
            PUBLISH["$CONTROL/dynsec/v1"],
            json.dumps({"commands": [{"command": "getDefaultACLAccess"}]}).encode(),
        ),
    ]
    for name, topic, payload in feeds:
        assert publish_cell(stack, p[name], topic, payload).code == 0, (name, topic)
    # A notification to the granted buyer (the observer stands in for broker_auth's notifier).
    assert observer.publish(topics["notify/<buyer>"], f"4.{nonce}4".encode()) == 0
    time.sleep(1.0)
    subs: dict[str, dict[str, SubCell]] = {}
    for name, (client, codes) in rows.items():
        got = client.received()
        client.close()
        subs[name] = {
            label: SubCell(codes[label], reached(label, codes, got, filters)) for label in SUBSCRIBE
        }

    # -- publishes: a fresh connection per cell (a refusal closes it), all at once ----------
    jobs: dict[tuple[str, str], tuple[str, bytes]] = {}
    for i, name in enumerate(ALLOWED_PUBLISH):
        slug = name.replace(" ", "-").replace("(", "").replace(")", "")
        for j, label in enumerate(PUBLISH):
            payload = f"{100 + 10 * i + j}.{nonce}".encode()
            if label == "$CONTROL/dynsec/v1":
                payload = control_command(f"matrix-{slug}-{nonce}")
            jobs[(name, label)] = (topics[label], payload)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = {
            key: pool.submit(publish_cell, stack, p[key[0]], topic, payload)
            for key, (topic, payload) in jobs.items()
        }
        results = {key: f.result(60) for key, f in futures.items()}
    expected_deliveries = {
        (topics[label], jobs[(name, label)][1])
        for name, allowed in ALLOWED_PUBLISH.items()
        for label in allowed
        if label != "$CONTROL/dynsec/v1"
    }
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not expected_deliveries <= set(observer.received()):
        time.sleep(0.05)
    time.sleep(0.5)  # room for anything that should not arrive
    seen = set(observer.received())
    observer.close()
    roles = {str(r.get("rolename")) for r in stack.auth.control().list_roles()}
    pubs: dict[str, dict[str, PubCell]] = {name: {} for name in ALLOWED_PUBLISH}
    for (name, label), result in results.items():
        topic, payload = jobs[(name, label)]
        if label == "$CONTROL/dynsec/v1":
            rolename = json.loads(payload)["commands"][0]["rolename"]
            result.delivered = rolename in roles
            if result.delivered:
                stack.auth.control().call({"command": "deleteRole", "rolename": rolename})
        else:
            result.delivered = (topic, payload) in seen
        pubs[name][label] = result

    wrong = []
    for name in ALLOWED_SUBSCRIBE:
        for label in SUBSCRIBE:
            cell = subs[name][label]
            allowed = label in ALLOWED_SUBSCRIBE[name]
            ok = (
                (cell.granted and cell.received)
                if allowed
                else (cell.code == NOT_AUTHORIZED and not cell.received)
            )
            if not ok:
                want = "granted" if allowed else "refused"
                wrong.append(f"MISMATCH {name} sub {label}: {cell.text()} (want {want})")
        for label in PUBLISH:
            pcell = pubs[name][label]
            allowed = label in ALLOWED_PUBLISH[name]
            ok = (
                (pcell.code == 0 and pcell.delivered)
                if allowed
                else (pcell.code == NOT_AUTHORIZED and not pcell.delivered)
            )
            if not ok:
                want = "accepted+delivered" if allowed else "0x87+dropped"
                wrong.append(f"MISMATCH {name} pub {label}: {pcell.text()} (want {want})")
    table = render(subs, pubs, wrong)
    REPORTS.append(table)
    print("\n" + table)
    assert not wrong, table


def test_wrong_credentials_are_refused_at_connect(full_stack: FullStack) -> None:
    p = full_stack.principals
    attempts: list[tuple[str | None, str | None]] = [
        (p[name].username, "not-the-password-" + secrets.token_hex(4))
        for name in ("buyer (grant)", "device A", "ingest", "admin")
    ]
    attempts += [
        ("nobody-" + secrets.token_hex(3), "whatever-password"),
        # A device password is bound to its own username.
        (p["device B"].username, p["device A"].password),
        # A buyer's login password is not the MQTT password.
        (p["buyer (grant)"].username, p["buyer (grant)"].password),
        ("svc.test-observer", p["admin"].password),
    ]
    for username, password in attempts:
        client = Mqtt(full_stack.broker.port, username, password)
        try:
            assert not client.connect(), f"{username} connected with a wrong password"
            assert client.connack is not None and client.connack.value in (0x86, 0x87)
        finally:
            client.close()


def test_taking_over_a_buyers_session_is_refused_and_leaks_nothing(full_stack: FullStack) -> None:
    """A session belongs to its owner: the id `<username>:...` is his (the session-ownership
    plugin), so a stranger presenting it, anonymous or another buyer, is refused at CONNECT and
    gets nothing, and the owner finds what was queued for him (tests/security/
    test_session_ownership.py attacks it in more ways). Receiving is also checked per message
    against whoever holds the session (publishClientReceive)."""
    stack = full_stack
    p = stack.principals
    victim_id = f"{p['buyer (grant)'].username}:victim-{secrets.token_hex(4)}"
    props = testing.mqtt.session_expiry(300)

    def session(who: Principal) -> tuple[mqtt.Client, list[bytes], dict[str, int]]:
        client = testing.mqtt.client(who.username, who.mqtt_password, client_id=victim_id)
        got: list[bytes] = []
        state: dict[str, int] = {}
        client.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
        client.on_connect = lambda _c, _u, flags, rc, _p: state.update(
            present=int(flags.session_present), code=int(rc.value)
        )
        client.connect("127.0.0.1", stack.broker.port, clean_start=False, properties=props)
        client.loop_start()
        wait_for(lambda: "code" in state, 10, f"{who.name}'s CONNACK")
        return client, got, state

    victim, victim_got, _ = session(p["buyer (grant)"])
    assert victim.subscribe(PUBLISH["live/A/x"], qos=1)[0] == mqtt.MQTT_ERR_SUCCESS
    time.sleep(0.3)
    # The victim's own session works: its grant lets the readings through.
    assert publish_cell(stack, p["device A"], PUBLISH["live/A/x"], b"7.0").code == 0
    wait_for(lambda: victim_got == [b"7.0"], 5, "the victim's reading")
    victim.disconnect()
    victim.loop_stop()
    for payload in (b"7.1", b"7.2"):  # queued for the absent victim
        assert publish_cell(stack, p["device A"], PUBLISH["live/A/x"], payload).code == 0
    for taker in (p["anonymous"], p["buyer (no grant)"]):
        client, got, state = session(taker)
        assert state["code"] == NOT_AUTHORIZED, f"{taker.name} took the victim's session over"
        assert publish_cell(stack, p["device A"], PUBLISH["live/A/x"], b"7.3").code == 0
        time.sleep(0.5)
        client.disconnect()
        client.loop_stop()
        assert got == [], f"{taker.name} received the victim's live data"
    victim, victim_got, state = session(p["buyer (grant)"])
    try:
        assert state["present"], "the victim's session is gone"
        wait_for(lambda: len(victim_got) >= 4, 5, "what was queued for the victim")
        time.sleep(0.2)
        assert victim_got == [b"7.1", b"7.2", b"7.3", b"7.3"]
    finally:
        victim.disconnect()
        victim.loop_stop()
