"""Helpers for the Docker Compose stack's tests.

There is no Docker engine here: compose files are checked with Debian's `docker-compose config`
(the same parser compose uses to start the stack), and the pieces that can run without Docker
(the `init` step, Mosquitto's container config, the health check commands) run for real.
YAML is read with the PyYAML that Debian's docker-compose itself depends on.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from testing import procs

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DASHBOARDS = REPO / "dashboard" / "dashboards"
DATASOURCES = REPO / "dashboard" / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS = REPO / "dashboard" / "provisioning" / "dashboards" / "dashboards.yml"
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"

# Services that run once and exit (no health check, `restart: "no"`).
ONE_SHOT = {"init"}
# Every service of the stack, all profiles on.
ALL_SERVICES = {
    "init",
    "mosquitto",
    "mongo",
    "influxdb",
    "averager",
    "broker_metrics",
    "grafana",
    "prometheus",
    "alertmanager",
    "broker_auth",
    "ingest",
    "simulator",
    "devnet",
    "faucet",
}
PROFILES = {"simulator": "demo", "devnet": "dev", "faucet": "dev"}


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if not found:
        pytest.fail("docker-compose is not installed (scripts/bootstrap.sh installs it)")
    return found


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f docker-compose.yml --env-file <env_file> <args>` with a clean env."""
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        # Only the env file may feed interpolation: the caller's environment could hide a gap.
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)},
    )


def load_yaml(text: str) -> Any:
    return yaml.safe_load(text)


def load_yaml_file(path: Path) -> Any:
    return load_yaml(path.read_text())


def compose_config(profiles: tuple[str, ...] = ("demo", "dev")) -> dict[str, Any]:
    """The interpolated compose model (`docker-compose config`), with the given profiles."""
    return _compose_config(tuple(sorted(profiles)))


@cache
def _compose_config(profiles: tuple[str, ...]) -> dict[str, Any]:
    args = [arg for p in profiles for arg in ("--profile", p)]
    result = run_compose(*args, "config")
    assert result.returncode == 0, result.stderr
    config = load_yaml(result.stdout)
    assert isinstance(config, dict)
    return config


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def env_example_names() -> set[str]:
    """Variables .env.example sets or documents (commented-out `#NAME=` lines count)."""
    return set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.MULTILINE))


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


@dataclass(frozen=True)
class IngestWorker:
    proc: procs.Proc
    metrics_port: int

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return str(r.read().decode())


@pytest.fixture(scope="module")
def ingest_worker(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_factory: Any, influx: Any
) -> Iterator[IngestWorker]:
    """A real ingest worker (`python -m ingest`) for its metric names.

    It gets a broker of its own: on the shared one it would also consume and store the ingest
    tests' readings, racing their own worker.
    """
    importlib.import_module("ingest.__main__")
    mosquitto = mosquitto_factory(f"compose-mosquitto-{procs.free_port()}")
    port = procs.free_port()
    proc = procs.python_service(
        "ingest",
        "ingest",
        tmp_path_factory.mktemp("compose-ingest"),
        {
            "MQTT_HOST": "127.0.0.1",
            "MQTT_PORT": str(mosquitto.port),
            "INGEST_MQTT_PASSWORD": mosquitto.ingest_password,
            "INGEST_CLIENT_ID": f"compose-ingest-{port}",
            **influx.writer_env,
            "INGEST_METRICS_HOST": "127.0.0.1",
            "INGEST_METRICS_PORT": str(port),
        },
        ready=lambda: procs.http_ok(f"http://127.0.0.1:{port}/metrics"),
    )
    proc.start()
    yield IngestWorker(proc, port)
    proc.stop()


def run_init(
    env: dict[str, str], data: Path, tls: Path, *args: str, uid: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m deploy.compose_init` as the compose `init` service runs it, into data/tls."""
    paths = {
        "INIT_DYNSEC_FILE": str(data / "dynamic-security.json"),
        "INIT_TLS_DIR": str(tls),
        "MOSQUITTO_UID": str(os.getuid() if uid is None else uid),
        "MOSQUITTO_GID": str(os.getgid() if uid is None else uid),
    }
    return subprocess.run(
        [sys.executable, "-m", "deploy.compose_init", *args],
        env={"PATH": os.environ["PATH"], **paths, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
