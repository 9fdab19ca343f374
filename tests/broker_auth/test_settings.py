"""Start-up refuses to run without its secrets; dev mode generates an admin token instead."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from broker_auth.settings import Settings
from tests.broker_auth.conftest import AuthStackFactory

BASE = {
    "DYNSEC_ADMIN_PASSWORD": "dynsec-secret-value",
    "BROKER_ADMIN_TOKEN": "admin-secret-token-value",
}


def run(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", "broker_auth"],
        env={**clean, "MONGO_URL": "mongodb://127.0.0.1:9/", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("DYNSEC_ADMIN_PASSWORD", "DYNSEC_ADMIN_PASSWORD"),
        ("BROKER_ADMIN_TOKEN", "BROKER_ADMIN_TOKEN"),
    ],
)
def test_refuses_to_start_without_a_secret(tmp_path: Path, drop: str, named: str) -> None:
    env = {k: v for k, v in BASE.items() if k != drop}
    result = run(env, tmp_path)
    assert result.returncode == 2
    assert named in result.stderr
    for secret in BASE.values():
        assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LATE_PAYMENT_WINDOW_S", "-1"),
        ("DEPOSIT_POOL_LOW_WATER", "many"),
        ("BROKER_ADMIN_TOKEN", "short"),
        ("SEED_DEMO", "true"),  # without DEMO_DEVICE_PASSWORD
        ("API_PORT", "99999"),
    ],
)
def test_refuses_bad_values(tmp_path: Path, name: str, value: str) -> None:
    result = run({**BASE, name: value}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "configuration error" in result.stderr


def test_dev_mode_generates_a_private_admin_token(auth_stack_factory: AuthStackFactory) -> None:
    stack = auth_stack_factory("devmode", BROKER_ADMIN_TOKEN="", BROKER_DEV_MODE="true")
    token_file = stack.proc.workdir / ".broker-admin-token"
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token not in stack.proc.log_text()
    r = httpx.post(
        f"{stack.api_url}/api/products",
        json={"id": "dev", "topic_filter": "live/dev/#", "price_iota_per_hour": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(("given", "exporter"), [("", False), ("a-metrics-password", True)])
def test_an_empty_exporter_password_means_no_exporter(
    monkeypatch: pytest.MonkeyPatch, given: str, exporter: bool
) -> None:
    """`BROKER_METRICS_MQTT_PASSWORD=` in an env file: the exporter's login is removed, never
    made with an empty password."""
    for name, value in {**BASE, "BROKER_METRICS_MQTT_PASSWORD": given}.items():
        monkeypatch.setenv(name, value)
    password = Settings().broker_metrics_mqtt_password
    assert (password is not None) == exporter
    if password is not None:
        assert password.get_secret_value() == given
