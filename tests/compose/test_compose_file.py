"""docker-compose.yml, .env.example, the Dockerfile and .dockerignore, checked statically."""

from __future__ import annotations

import importlib
import re
import tomllib
from typing import Any

import pytest

from tests.compose.conftest import (
    ALL_SERVICES,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    ONE_SHOT,
    PROFILES,
    REPO,
    compose_config,
    env_example,
    env_example_names,
    load_yaml_file,
    run_compose,
)

SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$")
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?[-?][^}]*)?\}")
GO_IMAGE = "golang:1.22-bookworm"
MOSQUITTO_DOCKERFILE = REPO / "mosquitto" / "docker" / "Dockerfile"
PROJECT_SERVICES = {
    "init", "broker_auth", "broker_metrics", "ingest", "averager", "simulator", "devnet", "faucet",
}  # fmt: skip


def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = config["services"]
    assert isinstance(result, dict)
    return result


def long_running(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services(config).items() if name not in ONE_SHOT}


@pytest.mark.parametrize("profiles", [(), ("demo", "dev")])
def test_config_is_valid_with_each_profile(profiles: tuple[str, ...]) -> None:
    config = compose_config(profiles)
    expected = {s for s in ALL_SERVICES if PROFILES.get(s) is None or PROFILES[s] in profiles}
    # docker-compose 1.29 lists every service whatever the profiles; compose v2 the active ones.
    assert expected <= set(services(config)) <= ALL_SERVICES
    for name, service in services(config).items():
        assert service.get("profiles", [None]) == [PROFILES.get(name)], name


def test_missing_secret_stops_compose_with_its_name(tmp_path) -> None:
    env = tmp_path / "partial.env"
    env.write_text(
        "".join(f"{k}={v}\n" for k, v in env_example().items() if k != "INGEST_MQTT_PASSWORD")
    )
    result = run_compose("config", "-q", env_file=env)
    assert result.returncode != 0
    assert "INGEST_MQTT_PASSWORD" in result.stderr


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in long_running(compose_config()).items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "retries", "start_period"):
            assert key in check, f"{name}: healthcheck.{key}"


def test_restart_policies() -> None:
    for name, service in services(compose_config()).items():
        expected = "no" if name in ONE_SHOT else "unless-stopped"
        assert service.get("restart") == expected, name


def test_depends_on_waits_for_health_or_completion() -> None:
    config = compose_config()
    all_services = services(config)
    for name, service in all_services.items():
        for target, spec in service.get("depends_on", {}).items():
            condition = spec.get("condition")
            if target in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, target)
            else:
                assert condition == "service_healthy", (name, target)
                assert "healthcheck" in all_services[target], target
            # A service must not wait on one that another profile may leave out.
            assert PROFILES.get(target) in (None, PROFILES.get(name)), (name, target)
    assert "init" in all_services["mosquitto"]["depends_on"]
    for project_service in ("broker_auth", "ingest"):
        assert "mosquitto" in all_services[project_service]["depends_on"]


def test_state_lives_in_named_volumes_and_binds_are_read_only_repo_files() -> None:
    config = compose_config()
    declared = set(config.get("volumes") or {})
    used: set[str] = set()
    for name, service in services(config).items():
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":") if isinstance(volume, str) else [None, None]
            assert source is not None, f"{name}: long volume syntax not expected"
            if target == "/etc/iot/deposit-addresses.txt":
                # The seller's own address list (DEPOSIT_ADDRESSES_FILE), not in the repository.
                assert mode == ["ro"], f"{name}: the address list must be mounted read-only"
                assert source.endswith("deposit-addresses.txt"), (name, volume)
                continue
            if source.startswith("/"):
                # Binds: configuration from the repository only, never state, never writable.
                assert source.startswith(str(REPO) + "/"), (name, volume)
                assert (REPO / source[len(str(REPO)) + 1 :]).exists(), (name, volume)
                assert mode == ["ro"], f"{name}: bind {source} must be read-only"
            else:
                assert source in declared, (name, volume)
                used.add(source)
    assert used == declared, "declared volumes nobody mounts"
    for name, service in services(config).items():
        # Anonymous volumes would be lost on `docker compose down`; data paths must be named.
        assert "tmpfs" not in service, name


def test_project_services_run_the_project_image_and_its_console_scripts() -> None:
    config = compose_config()
    scripts = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    images = {services(config)[name]["image"] for name in PROJECT_SERVICES}
    assert len(images) == 1
    expected = {
        "broker_auth": "iot-broker-auth",
        "ingest": "iot-ingest",
        "averager": "iot-averager",
        "broker_metrics": "iot-broker-metrics",
        "simulator": "iot-sim",
        "devnet": "iot-devnet",
        "faucet": "iot-devnet",
    }
    for name, script in expected.items():
        command = services(config)[name]["command"]
        assert command[0] == script and script in scripts, name
    assert services(config)["devnet"]["command"][1:4] == ["node", "--api-host", "0.0.0.0"]
    assert services(config)["faucet"]["command"][1:4] == ["faucet", "--host", "0.0.0.0"]
    assert services(config)["init"]["command"] == ["python", "-m", "deploy.compose_init"]
    assert services(config)["simulator"]["profiles"] == ["demo"]
    assert services(config)["devnet"]["profiles"] == ["dev"]
    assert services(config)["faucet"]["profiles"] == ["dev"]


def test_project_services_get_the_contract_names() -> None:
    s = services(compose_config())
    common = {"MQTT_HOST": "mosquitto", "MQTT_PORT": "1883"}
    influx = {
        "INFLUX_URL": "http://influxdb:8086",
        "INFLUX_ORG": "iot",
        "INFLUX_BUCKET": "telemetry",
    }
    expected = {
        "broker_auth": {
            **common,
            **influx,
            "MONGO_URL": "mongodb://mongo:27017/",
            "API_HOST": "0.0.0.0",
            "API_PORT": "8000",
            "IOTA_NODE_URL": "http://devnet:14265",
            "DYNSEC_ADMIN_USERNAME": "svc.broker-admin",
            "BROKER_DEV_MODE": "false",
        },
        "ingest": {
            **common,
            **influx,
            "INGEST_MQTT_USERNAME": "svc.ingest",
            "INGEST_METRICS_HOST": "0.0.0.0",
            "INGEST_METRICS_PORT": "9102",
        },
        "simulator": common,
    }
    for name, env in expected.items():
        for key, value in env.items():
            assert str(s[name]["environment"].get(key)) == value, (name, key)
    for name in ("broker_auth", "ingest"):
        for key in ("INFLUX_TOKEN",):
            assert s[name]["environment"][key] == env_example()[key]
    assert (
        s["broker_auth"]["environment"]["BROKER_ADMIN_TOKEN"] == env_example()["BROKER_ADMIN_TOKEN"]
    )


@pytest.mark.parametrize(
    ("service", "settings_path"),
    [
        ("broker_auth", "broker_auth.settings:Settings"),
        ("ingest", "ingest.settings:IngestSettings"),
        ("averager", "ingest.settings:IngestSettings"),
        ("broker_metrics", "broker_metrics.settings:ExporterSettings"),
    ],
)
def test_environment_names_are_read_by_the_service(service: str, settings_path: str) -> None:
    """Each variable handed to a service is one its settings read: a typo would be ignored."""
    module_name, _, class_name = settings_path.partition(":")
    module = importlib.import_module(module_name)
    settings_class = getattr(module, class_name)
    aliases = {f.alias or n for n, f in settings_class.model_fields.items()}
    # Names of the shared contract a service may receive without reading them.
    shared = {"MQTT_TLS_PORT", "MQTT_WS_PORT", "LIVE_TOPIC_PREFIX", "AVG_TOPIC_PREFIX"}
    env = services(compose_config())[service]["environment"]
    unknown = set(env) - aliases - shared
    assert not unknown, f"{service} does not read {sorted(unknown)}"


def test_no_literal_secret_in_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    raw = load_yaml_file(COMPOSE_FILE)
    for name, service in raw["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form for environment"
        for key, value in env.items():
            if SECRET_NAME.search(key) or SECRET_NAME.search(str(key)):
                match = INTERPOLATION.fullmatch(str(value))
                assert match, f"{name}.{key} must come from .env, e.g. ${{{key}:?...}}"
    # No value from .env.example is written into the compose file itself.
    for key, value in env_example().items():
        if SECRET_NAME.search(key):
            assert value not in text, key
    assert not re.search(r"(?i)(password|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/_-]{12,}", text)


def test_required_secrets_use_the_error_form() -> None:
    text = COMPOSE_FILE.read_text()
    for secret in (
        "BROKER_ADMIN_TOKEN",
        "DYNSEC_ADMIN_PASSWORD",
        "INGEST_MQTT_PASSWORD",
        "BROKER_METRICS_MQTT_PASSWORD",
        "INFLUX_TOKEN",
        "INFLUXDB_ADMIN_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ):
        uses = re.findall(r"\$\{" + secret + r"(:?[-?])?[^}]*\}", text)
        assert uses and all(u == ":?" for u in uses), secret


def test_env_example_documents_every_variable_and_holds_placeholders_only() -> None:
    code = "\n".join(
        line for line in COMPOSE_FILE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    used = set(INTERPOLATION.findall(code))
    documented = env_example_names()
    # PROJECT_IMAGE (image tag to push/pull) is documented in docker-compose.yml itself.
    assert used - documented <= {"PROJECT_IMAGE"}, sorted(used - documented)
    for key, value in env_example().items():
        if SECRET_NAME.search(key):
            assert value.startswith("change-me"), f"{key} must be a change-me placeholder"
    # No deposit address at all: the seller derives her own list from her own seed.
    assert "IOTA_DEPOSIT_ADDRESS" not in env_example()
    assert env_example()["DEPOSIT_ADDRESSES_FILE"] == "./deposit-addresses.txt"
    gitignore = (REPO / ".gitignore").read_text().split()
    assert ".env" in gitignore
    assert ENV_EXAMPLE.name != ".env"


def published_ports(service: dict[str, Any]) -> dict[str, str]:
    """Container port -> host address it is published on."""
    result: dict[str, str] = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):  # long syntax (compose v2's `config` output)
            result[str(port["target"])] = str(port.get("host_ip", "0.0.0.0"))
        else:  # "host_ip:published:target/proto"
            parts = str(port).split(":")
            result[parts[-1].split("/")[0]] = parts[0] if len(parts) == 3 else "0.0.0.0"
    return result


def test_public_and_admin_ports() -> None:
    s = services(compose_config())
    published = {name: published_ports(svc) for name, svc in s.items()}
    assert set(published["mosquitto"]) == {"1883", "8883", "9001"}
    assert set(published["broker_auth"]) == {"8000"}
    # Operator UIs stay on loopback by default; databases are not published at all.
    for name in ("grafana", "influxdb", "prometheus"):
        assert set(published[name].values()) == {"127.0.0.1"}, name
    assert not published["mongo"]
    assert not published["ingest"]


def test_dockerfile_builds_a_slim_non_root_image_without_secrets() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    # A Go stage builds Hornet (the dev profile's node); the image itself is python:3.11-slim.
    assert froms[-1] == "python:3.11-slim" and set(froms) <= {"python:3.11-slim", GO_IMAGE}
    assert "github.com/gohornet/hornet@v0.5.6" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert not re.search(r"^(ENV|ARG)\s+.*(PASSWORD|TOKEN|SECRET)", dockerfile, re.M | re.I)
    # Every package the project installs is copied into the build.
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for pattern in packages:
        package = pattern.rstrip("*")
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package
    assert "compat/pysha3" in dockerfile


def test_dockerignore_keeps_secrets_and_state_out_of_the_build_context() -> None:
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Deny everything, then allow what the Dockerfile copies: .env, .data, .venv stay out.
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert not allowed & {".env", ".data", ".venv", ".git", ".tools", "tests", "testing"}
    copied: set[str] = set()
    for line in re.findall(r"^COPY (.+)$", (REPO / "Dockerfile").read_text(), re.M):
        if not line.startswith("--from="):
            copied.update(line.split()[:-1])
    assert {"pyproject.toml", "README.md", "compat/pysha3"} <= copied
    for source in copied:
        assert any(
            source == a or source.startswith(a + "/") or a.startswith(source + "/") for a in allowed
        ), source


def test_third_party_images_are_pinned() -> None:
    images = {name: s["image"] for name, s in services(compose_config()).items()}
    for name, image in images.items():
        if name in PROJECT_SERVICES:
            continue
        _, _, tag = image.rpartition(":")
        assert tag and tag != "latest", f"{name}: pin a version ({image})"
    # The 2.0 line: same broker and plugin as the native stack (Debian's 2.0); not 2.1. The
    # broker is that image plus the session-ownership plugin (mosquitto/docker/Dockerfile).
    (base,) = set(
        re.findall(r"^ARG MOSQUITTO_IMAGE=(\S+)$", MOSQUITTO_DOCKERFILE.read_text(), re.M)
    )
    assert re.fullmatch(r"eclipse-mosquitto:2\.0\.\d+", base), base
    assert images["mosquitto"].endswith(":" + base.partition(":")[2])
    assert images["mongo"].startswith("mongo:7")
    assert images["influxdb"].startswith("influxdb:2.7")


def test_the_broker_image_builds_the_session_ownership_plugin() -> None:
    """Mosquitto's image is eclipse-mosquitto plus mosquitto/plugin, built in a first stage from
    the plugin's source only; mosquitto/docker/mosquitto.conf loads it from /usr/lib."""
    broker = services(compose_config())["mosquitto"]
    context = (COMPOSE_FILE.parent / broker["build"]["context"]).resolve()
    assert context == REPO / "mosquitto"
    assert (context / broker["build"]["dockerfile"]).resolve() == MOSQUITTO_DOCKERFILE
    dockerfile = MOSQUITTO_DOCKERFILE.read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert stages == ["${MOSQUITTO_IMAGE}", "${MOSQUITTO_IMAGE}"]
    copied = [line.split()[:-1] for line in re.findall(r"^COPY (.+)$", dockerfile, re.M)]
    assert copied == [["plugin/"], ["--from=plugin", "/src/mosquitto_session_ownership.so"]]
    assert "COPY --from=plugin /src/mosquitto_session_ownership.so /usr/lib/" in dockerfile
    # The build context holds the plugin's source and nothing else.
    lines = (context / ".dockerignore").read_text().splitlines()
    ignore = [r.strip() for r in lines if r.strip() and not r.startswith("#")]
    assert ignore[0] == "*"
    allowed = [r[1:] for r in ignore if r.startswith("!")]
    assert allowed and all((context / a).is_file() and a.startswith("plugin/") for a in allowed)
    conf = (REPO / "mosquitto" / "docker" / "mosquitto.conf").read_text()
    assert "\nplugin /usr/lib/mosquitto_session_ownership.so\n" in conf
