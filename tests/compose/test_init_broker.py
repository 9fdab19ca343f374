"""The `init` step for real, and a real Mosquitto started from what it wrote.

`python -m deploy.compose_init` writes the dynamic-security file and TLS material the way the
compose `init` service does; Debian's Mosquitto 2.0 (the same plugin) is then started with
mosquitto/docker/mosquitto.conf, its container paths mapped to the test's directories. The
broker's compose health check runs against it unchanged (but for the port).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

import testing.mqtt
from broker_auth.broker import acl_model
from stack import mosquitto_conf
from testing import procs
from testing.addresses import random_address
from tests.compose.conftest import REPO, compose_config, run_init

DOCKER_CONF = REPO / "mosquitto" / "docker" / "mosquitto.conf"
TEMPLATE = REPO / "mosquitto" / "mosquitto.conf.template"
# Where mosquitto/docker/Dockerfile installs the session-ownership plugin in the image.
SESSION_PLUGIN = "/usr/lib/mosquitto_session_ownership.so"


def valid_env() -> dict[str, str]:
    return {
        "DYNSEC_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "INGEST_MQTT_PASSWORD": secrets.token_urlsafe(24),
        "BROKER_ADMIN_TOKEN": secrets.token_urlsafe(32),
        "INFLUX_TOKEN": secrets.token_urlsafe(32),
        "INFLUXDB_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(12),
        "IOTA_DEPOSIT_ADDRESSES_FILE": str(address_file()),
    }


def address_file() -> Path:
    """A seller's address list as broker_auth gets it mounted (random Kerl-shaped addresses)."""
    fd, name = tempfile.mkstemp(prefix="deposit-addresses-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write("# derived with iot-wallet addresses\n")
        f.writelines(random_address() + "\n" for _ in range(3))
    return Path(name)


def container_paths() -> dict[str, str]:
    """Where each init output lands inside the Mosquitto container, following the volumes."""
    services = compose_config()["services"]

    def mounts(service: str) -> dict[str, str]:
        return {
            v.split(":")[0]: v.split(":")[1]
            for v in services[service]["volumes"]
            if not v.startswith("/")
        }

    init_env = services["init"]["environment"]
    init_mounts, broker_mounts = mounts("init"), mounts("mosquitto")
    result = {}
    for key in ("INIT_DYNSEC_FILE", "INIT_TLS_DIR"):
        path = init_env[key]
        for volume, target in init_mounts.items():
            if path == target or path.startswith(target + "/"):
                result[key] = broker_mounts[volume] + path[len(target) :]
    assert set(result) == {"INIT_DYNSEC_FILE", "INIT_TLS_DIR"}
    return result


def directives(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            pairs.append((key, value.strip()))
    return pairs


def local_conf(data: Path, tls: Path, ports: dict[int, int]) -> str:
    """The container config with its paths and ports mapped to this machine."""
    where = container_paths()
    text = "\n".join(f"{k} {v}" for k, v in directives(DOCKER_CONF.read_text())) + "\n"
    text = text.replace("/usr/lib/mosquitto_dynamic_security.so", mosquitto_conf.DYNSEC_PLUGIN)
    text = text.replace(SESSION_PLUGIN, str(mosquitto_conf.SESSION_PLUGIN))
    text = text.replace(where["INIT_DYNSEC_FILE"], str(data / "dynamic-security.json"))
    text = text.replace(where["INIT_TLS_DIR"] + "/", f"{tls}/")
    text = text.replace("/mosquitto/data/", f"{data}/")
    text = re.sub(
        r"^listener (\d+)$",
        lambda m: f"listener {ports[int(m.group(1))]} 127.0.0.1",
        text,
        flags=re.MULTILINE,
    )
    assert "/mosquitto/" not in text
    # As root, Mosquitto would drop to its own user, as in the image (there: uid 1883).
    return ("user root\n" if os.geteuid() == 0 else "") + text


@dataclass
class Broker:
    proc: procs.Proc
    data: Path
    tls: Path
    env: dict[str, str]
    ports: dict[int, int]

    @property
    def port(self) -> int:
        return self.ports[1883]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp("compose-broker")
    data, tls = root / "mosquitto-data", root / "mosquitto-tls"
    env = valid_env()
    result = run_init(env, data, tls)
    assert result.returncode == 0, result.stderr
    ports = {1883: procs.free_port(), 8883: procs.free_port(), 9001: procs.free_port()}
    conf = root / "mosquitto.conf"
    conf.write_text(local_conf(data, tls, ports))
    proc = procs.Proc(
        "mosquitto",
        [procs.find_binary("mosquitto"), "-c", str(conf)],
        root,
        ready=lambda: all(procs.port_open(p) for p in ports.values()),
    ).start()
    yield Broker(proc, data, tls, env, ports)
    proc.stop()


def mosquitto_sub(port: int, topic: str, *extra: str) -> subprocess.CompletedProcess[str]:
    # A client with a username uses a client id of its own: `<username>:...`.
    own_id = ["-i", f"{extra[extra.index('-u') + 1]}:compose-test"] if "-u" in extra else []
    argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-E", "-W", "5"]
    return subprocess.run(
        [*argv, *own_id, *extra],
        capture_output=True,
        text=True,
        timeout=15,
    )


def broker_health_check(port: int) -> subprocess.CompletedProcess[str]:
    """The compose health check of `mosquitto`, as the container's shell would run it."""
    test: list[str] = compose_config()["services"]["mosquitto"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$")  # compose's escape for a literal $
    assert "-p 1883" in command
    return subprocess.run(
        ["sh", "-c", command.replace("-p 1883", f"-p {port}")],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_init_writes_private_files_for_mosquitto(broker: Broker) -> None:
    dynsec = broker.data / "dynamic-security.json"
    assert dynsec.stat().st_mode & 0o777 == 0o600
    assert (broker.tls / "server.key").stat().st_mode & 0o777 == 0o600
    for public in ("ca.crt", "server.crt"):
        assert (broker.tls / public).stat().st_mode & 0o777 == 0o644
    text = dynsec.read_text()
    for value in broker.env.values():
        assert value not in text  # hashed, never in clear


def test_docker_conf_keeps_the_template_settings() -> None:
    """Same settings as the native template, but for paths, ports, bind address and user."""
    local = {
        "user",
        "plugin",
        "plugin_opt_config_file",
        "persistence_location",
        "cafile",
        "certfile",
        "keyfile",
    }

    def comparable(text: str) -> list[tuple[str, str]]:
        pairs = []
        for key, value in directives(text):
            if key == "listener":
                value = ""
            elif key in local or key.startswith("$"):
                continue
            pairs.append((key, value))
        return pairs

    assert comparable(DOCKER_CONF.read_text()) == comparable(TEMPLATE.read_text())
    listeners = [v for k, v in directives(DOCKER_CONF.read_text()) if k == "listener"]
    assert listeners == ["1883", "8883", "9001"]  # all interfaces inside the container
    # The same plugins in the same order: session ownership first, then dynamic security.
    plugins = [v for k, v in directives(DOCKER_CONF.read_text()) if k == "plugin"]
    assert plugins == [SESSION_PLUGIN, "/usr/lib/mosquitto_dynamic_security.so"]
    assert [v for k, v in directives(TEMPLATE.read_text()) if k == "plugin"] == [
        "$session_plugin",
        "$dynsec_plugin",
    ]
    conf = dict(directives(DOCKER_CONF.read_text()))
    where = container_paths()
    assert conf["plugin_opt_config_file"] == where["INIT_DYNSEC_FILE"]
    for key, name in (("cafile", "ca.crt"), ("certfile", "server.crt"), ("keyfile", "server.key")):
        assert conf[key] == f"{where['INIT_TLS_DIR']}/{name}"


def test_compose_health_check_passes_on_the_real_broker(broker: Broker) -> None:
    result = broker_health_check(broker.port)
    assert result.returncode == 0, result.stdout + result.stderr


def test_health_check_fails_when_nothing_listens() -> None:
    assert broker_health_check(procs.free_port()).returncode != 0


def test_anonymous_clients_read_averages_only(broker: Broker) -> None:
    assert mosquitto_sub(broker.port, "avg/1m/plug-1/power").stderr == ""
    assert "denied" in mosquitto_sub(broker.port, "live/plug-1/power").stderr


def test_service_accounts_log_in_with_the_env_passwords(broker: Broker) -> None:
    admin = mosquitto_sub(
        broker.port,
        "$CONTROL/dynamic-security/v1/response",
        "-u",
        acl_model.ADMIN_USERNAME,
        "-P",
        broker.env["DYNSEC_ADMIN_PASSWORD"],
    )
    assert admin.returncode == 0 and admin.stderr == "", admin.stderr
    ingest = mosquitto_sub(
        broker.port,
        "live/#",
        "-u",
        acl_model.INGEST_USERNAME,
        "-P",
        broker.env["INGEST_MQTT_PASSWORD"],
    )
    assert ingest.returncode == 0 and ingest.stderr == "", ingest.stderr
    wrong = mosquitto_sub(
        broker.port, "live/#", "-u", acl_model.INGEST_USERNAME, "-P", "not-the-password"
    )
    assert wrong.returncode != 0


def test_tls_listener_serves_the_generated_certificate(broker: Broker) -> None:
    result = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            "localhost",  # a name the certificate covers (MQTT_TLS_HOSTNAMES)
            "-p",
            str(broker.ports[8883]),
            "--cafile",
            str(broker.tls / "ca.crt"),
            "-t",
            "avg/#",
            "-E",
            "-W",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_websocket_listener_accepts_mqtt(broker: Broker) -> None:
    connected: list[Any] = []
    client = testing.mqtt.client(client_id="", protocol=mqtt.MQTTv311, transport="websockets")
    client.on_connect = lambda _c, _u, _f, reason, _p: connected.append(reason)
    client.connect("127.0.0.1", broker.ports[9001])
    client.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not connected and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.loop_stop()
        client.disconnect()
    assert connected and not connected[0].is_failure


def test_rerun_keeps_the_files_and_rotation_applies_new_passwords(broker: Broker) -> None:
    dynsec = broker.data / "dynamic-security.json"
    before = {p: p.read_bytes() for p in (dynsec, *broker.tls.iterdir())}
    again = run_init(broker.env, broker.data, broker.tls)
    assert again.returncode == 0, again.stderr
    assert {p: p.read_bytes() for p in before} == before

    new_password = secrets.token_urlsafe(24)
    changed = {**broker.env, "INGEST_MQTT_PASSWORD": new_password}
    refused = run_init(changed, broker.data, broker.tls)
    assert refused.returncode == 2
    assert acl_model.INGEST_USERNAME in refused.stderr
    assert "--rotate-service-passwords" in refused.stderr
    assert new_password not in refused.stderr + refused.stdout

    broker.proc.stop()
    rotated = run_init(changed, broker.data, broker.tls, "--rotate-service-passwords")
    assert rotated.returncode == 0, rotated.stderr
    broker.proc.start()
    login = ["-u", acl_model.INGEST_USERNAME, "-P"]
    assert mosquitto_sub(broker.port, "live/#", *login, new_password).returncode == 0
    old = broker.env["INGEST_MQTT_PASSWORD"]
    assert mosquitto_sub(broker.port, "live/#", *login, old).returncode != 0
    # The admin account (and everything else in the file) is untouched.
    admin = ["-u", acl_model.ADMIN_USERNAME, "-P", broker.env["DYNSEC_ADMIN_PASSWORD"]]
    assert mosquitto_sub(broker.port, "$CONTROL/dynamic-security/v1/response", *admin).stderr == ""
    broker.env["INGEST_MQTT_PASSWORD"] = new_password


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"BROKER_ADMIN_TOKEN": "change-me-broker-admin-token"}, "BROKER_ADMIN_TOKEN"),
        ({"INFLUXDB_ADMIN_PASSWORD": "abc1234"}, "INFLUXDB_ADMIN_PASSWORD"),
        ({"IOTA_DEPOSIT_ADDRESSES_FILE": "/nonexistent/deposit-addresses.txt"}, "deposit-address"),
        ({"SEED_DEMO": "true", "DEMO_DEVICE_PASSWORD": "change-me-demo"}, "DEMO_DEVICE_PASSWORD"),
        ({"DYNSEC_ADMIN_PASSWORD": None}, "DYNSEC_ADMIN_PASSWORD"),
    ],
)
def test_init_refuses_placeholders_and_gaps_without_echoing_them(
    tmp_path: Path, change: dict[str, str | None], message: str
) -> None:
    env = {k: v for k, v in {**valid_env(), **change}.items() if v is not None}
    result = run_init(env, tmp_path / "data", tmp_path / "tls")
    assert result.returncode == 2
    assert message in result.stderr
    for value in change.values():
        if value:
            assert value not in result.stderr + result.stdout
    assert not (tmp_path / "data" / "dynamic-security.json").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another user needs root")
def test_init_as_root_hands_the_files_to_the_mosquitto_user(tmp_path: Path) -> None:
    uid = int(compose_config()["services"]["init"]["environment"]["MOSQUITTO_UID"])
    assert uid == 1883  # the `mosquitto` user of the eclipse-mosquitto image
    result = run_init(valid_env(), tmp_path / "data", tmp_path / "tls", uid=uid)
    assert result.returncode == 0, result.stderr
    for path in (tmp_path / "data", tmp_path / "tls", *(tmp_path / "tls").iterdir()):
        assert path.stat().st_uid == uid, path
    assert (tmp_path / "data" / "dynamic-security.json").stat().st_uid == uid
