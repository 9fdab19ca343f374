"""No password, seed or token in any log, and none in clear text at rest.

The full stack (broker_auth and the ingest worker at DEBUG, Mosquitto, devnet, FerretDB,
InfluxDB, and each `iot-wallet` run) has walked the story in the `full_stack` fixture:
registrations, device provisioning, products, orders, payments from seed files. Here the admin
and the buyers make a few more calls, right and wrong (wrong admin tokens, guessed passwords, a
password refused by validation), devices and buyers use MQTT, and then every process log is
searched for every secret used: buyer passwords (and their HTTP Basic encoding), the MQTT
passwords broker_auth generated, session tokens (used, revoked and guessed), device passwords
returned by the API, the admin token, the dynamic-security admin password, the ingest
password, the observer's password, the buyers' seeds, and the wrong guesses themselves.
The same secrets are looked for at rest (Mosquitto's dynamic-security file and persistence,
FerretDB's files) and on the public /metrics pages; and the portal's static files must not be
a way out of their folder.
"""

from __future__ import annotations

import secrets
import signal
import socket
from pathlib import Path

import httpx

from stack.mqtt_probe import MqttProbe
from testing.procs import wait_for
from tests.security.conftest import DEVICE_A, FullStack

MIN_SECRET_LENGTH = 12  # shorter strings would match by chance


def exercise(stack: FullStack) -> dict[str, str]:
    """More traffic, right and wrong; returns the extra secrets it used."""
    auth, api = stack.auth, stack.api()
    p = stack.principals
    extra = {
        "wrong admin token": "wrong-token-" + secrets.token_urlsafe(16),
        "guessed buyer password": "guess-" + secrets.token_urlsafe(16),
        "refused signup password": "refused-" + secrets.token_urlsafe(16),
        "new device password": "",
    }
    for headers in (
        {"Authorization": f"Bearer {extra['wrong admin token']}"},
        {"Authorization": f"Bearer {stack.broker.admin_password}"},  # the wrong secret
        {"Authorization": f"Basic {extra['wrong admin token']}"},
    ):
        assert api.get("/api/payments", headers=headers).status_code == 401
        r = api.post("/api/devices", json={"device_id": "nope"}, headers=headers)
        assert r.status_code == 401
    buyer = p["buyer (no grant)"]
    assert buyer.username and buyer.password
    r = api.get("/api/grants", auth=(buyer.username, extra["guessed buyer password"]))
    assert r.status_code == 401
    # A control character makes the password invalid: the 422 names the field, not the value.
    r = api.post(
        "/api/accounts",
        json={"username": "refused-1", "password": extra["refused signup password"] + "\x01"},
    )
    assert r.status_code == 422 and extra["refused signup password"] not in r.text
    # Sessions: a login, calls with the token, a log-out, a guessed token and a wrong login.
    r = api.post("/api/sessions", json={"username": buyer.username, "password": buyer.password})
    assert r.status_code == 201
    extra["session token"] = r.json()["token"]
    bearer = {"Authorization": f"Bearer {extra['session token']}"}
    assert api.get("/api/grants", headers=bearer).status_code == 200
    assert api.delete("/api/sessions/current", headers=bearer).status_code == 204
    assert api.get("/api/grants", headers=bearer).status_code == 401
    extra["guessed session token"] = secrets.token_urlsafe(32)
    guessed = {"Authorization": f"Bearer {extra['guessed session token']}"}
    assert api.get("/api/grants", headers=guessed).status_code == 401
    wrong_login = {"username": buyer.username, "password": extra["guessed buyer password"]}
    assert api.post("/api/sessions", json=wrong_login).status_code == 401
    # The admin provisions one more device and reads payments; the buyer reads its data.
    r = api.post("/api/devices", json={"device_id": "sensor-c"}, headers=auth.admin)
    assert r.status_code == 201
    extra["new device password"] = r.json()["password"]
    assert api.get("/api/payments", headers=auth.admin).status_code == 200
    granted = p["buyer (grant)"]
    assert granted.username and granted.password
    for path in ("/api/grants", "/api/orders"):
        assert api.get(path, auth=(granted.username, granted.password)).status_code == 200

    # MQTT: the granted buyer listens, device A publishes good and bad readings, the new
    # device connects, someone guesses an MQTT password.
    listener = MqttProbe(stack.broker.port, granted.username, granted.mqtt_password)
    assert listener.connect() and listener.subscribe(f"live/{DEVICE_A}/#")
    device = p["device A"]
    stored_before = stack.ingest.metric("ingest_readings_stored_total")
    plug = MqttProbe(stack.broker.port, device.username, device.password)
    assert plug.connect()
    for i in range(5):
        plug.publish(f"live/{DEVICE_A}/power", f"{100 + i}.5")
    plug.publish(f"live/{DEVICE_A}/power", b"not a number")
    plug.close()
    assert listener.next_message(5) is not None
    listener.close()
    newcomer = MqttProbe(stack.broker.port, "device.sensor-c", extra["new device password"])
    assert newcomer.connect()
    newcomer.close()
    guesser = MqttProbe(stack.broker.port, granted.username, extra["guessed buyer password"])
    assert not guesser.connect()
    wait_for(
        lambda: stack.ingest.metric("ingest_readings_stored_total") >= stored_before + 5,
        15,
        "the ingest worker to store the readings",
    )
    return extra


def log_files(stack: FullStack) -> list[Path]:
    files = {proc.log_path for proc in stack.processes}
    files |= set(stack.workdir.rglob("*.log"))
    return sorted(f for f in files if f.exists())


def test_no_secret_in_any_log(full_stack: FullStack) -> None:
    stack = full_stack
    found = dict(stack.secrets)
    found.update(exercise(stack))
    assert all(len(value) >= MIN_SECRET_LENGTH for value in found.values()), found.keys()
    files = log_files(stack)
    names = {f.name for f in files}
    # Every service's log is there, and says something (DEBUG for broker_auth and ingest).
    assert {"broker_auth.log", "mosquitto.log", "hornet.log", "faucet.log"} <= names, names
    assert any(n.startswith("ingest-") for n in names) and any(
        n.startswith("wallet-") for n in names
    )
    texts = {f: f.read_text(errors="replace") for f in files}
    auth_log = texts[stack.auth.proc.log_path]
    assert "DEBUG" in auth_log and "account" in auth_log and "grant" in auth_log
    assert "wrong admin token" in auth_log  # the failed attempt is logged, the token is not
    assert "New client connected" in texts[stack.broker.proc.log_path]
    leaks = [
        f"{name} in {path.name}"
        for path, text in texts.items()
        for name, value in found.items()
        if value in text
    ]
    total = sum(len(t) for t in texts.values())
    print(f"\nlog audit: {len(found)} secrets x {len(files)} logs ({total} characters): {leaks}")
    assert not leaks


def test_no_clear_text_secret_at_rest(full_stack: FullStack) -> None:
    """The broker's dynamic-security file and the database hold hashes, never the secrets."""
    stack = full_stack
    broker_dir = stack.broker.proc.workdir
    files = [broker_dir / "dynamic-security.json", *broker_dir.glob("mosquitto.db")]
    # Stored state reaches disk at the next autosave (10 s); ask for it now.
    stack.broker.proc.signal(signal.SIGUSR1)
    wait_for(lambda: (broker_dir / "mosquitto.db").exists(), 15, "mosquitto.db")
    ferret_dir = stack.ferret_data
    files += [f for f in ferret_dir.rglob("*") if f.is_file()]
    assert files
    leaks = [
        f"{name} in {path.relative_to(path.parents[1])}"
        for path in files
        for name, value in stack.secrets.items()
        if value.encode() in path.read_bytes()
    ]
    assert not leaks


def test_wrong_secret_attempts_answer_without_echo(full_stack: FullStack) -> None:
    api = full_stack.api()
    token = secrets.token_hex(16)
    short = secrets.token_hex(3)  # too short a password: refused, and not repeated
    for r in (
        api.get("/api/payments", headers={"Authorization": f"Bearer {token}"}),
        api.get("/api/grants", auth=("nobody-here", token)),
        api.post("/api/accounts", json={"username": "Bad Name", "password": token}),
        api.post("/api/accounts", json={"username": "echo-user", "password": short}),
    ):
        assert r.status_code in (401, 422), r.text
        assert token not in r.text and short not in r.text
        assert isinstance(r.json()["detail"], str | list)


def test_public_metrics_name_no_buyer_and_no_secret(full_stack: FullStack) -> None:
    """/metrics is public (Prometheus scrapes it): no usernames, device ids or secrets."""
    stack = full_stack
    texts = [
        stack.api().get("/metrics").text,
        httpx.get(f"http://127.0.0.1:{stack.ingest.metrics_port}/metrics", timeout=10).text,
    ]
    names = [p.username for p in stack.principals.values() if p.username]
    for text in texts:
        assert "broker_auth_" in text or "ingest_" in text
        for value in [*stack.secrets.values(), *names]:
            assert value not in text


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (no client-side normalisation of `..`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def test_portal_files_do_not_escape_their_folder(full_stack: FullStack) -> None:
    port = int(full_stack.auth.api_url.rsplit(":", 1)[1])
    status, answer = raw_get(port, "/portal/portal.css")
    assert status == 200 and answer  # the folder is served...
    for path in (  # ...and nothing outside it
        "/portal/../../../../../../etc/passwd",
        "/portal/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/portal/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/portal/../mount.py",
        "/portal/..%2fmount.py",
    ):
        status, answer = raw_get(port, path)
        assert status in (400, 404), (path, answer[:200])
        assert b"root:" not in answer and b"StaticFiles" not in answer
