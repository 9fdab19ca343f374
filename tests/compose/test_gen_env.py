"""deploy/gen-env.sh: a `.env` the stack accepts, with fresh secrets each time."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.compose.conftest import REPO, env_example, run_compose, run_init

SCRIPT = REPO / "deploy" / "gen-env.sh"


def generate(*args: str) -> dict[str, str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=True
    )
    values: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_dev_env_passes_compose_and_the_init_preflight(tmp_path: Path) -> None:
    env = generate("--dev")
    assert set(env) == set(env_example())
    assert not any(v.startswith("change-me") for v in env.values())
    assert env["SEED_DEMO"] == "true"
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    assert run_compose("config", "-q", env_file=env_file).returncode == 0
    result = run_init(env, tmp_path / "data", tmp_path / "tls")
    assert result.returncode == 0, result.stderr


def test_secrets_are_fresh_and_the_addresses_are_left_to_the_owner() -> None:
    first, second = generate(), generate()
    for key, value in env_example().items():
        if value.startswith("change-me"):
            assert len(first[key]) == 32 and first[key] != second[key], key
        else:
            assert first[key] == value, key
    assert first["DEPOSIT_ADDRESSES_FILE"] == env_example()["DEPOSIT_ADDRESSES_FILE"]
    assert "IOTA_DEPOSIT_ADDRESS" not in first
