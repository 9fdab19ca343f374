"""The local stack's generated secrets: kept private, stable, and usable by the node."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from iota import Address

from stack.secrets import GENERATED, ensure_secrets, where_from
from testing.addresses import random_address


def test_secrets_are_generated_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    first = ensure_secrets(path)
    assert set(first) == set(GENERATED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secrets(path) == first


def test_random_deposit_address_ends_in_a_zero_trit() -> None:
    # The devnet (like IRI) refuses value transfers to addresses whose last trit is not 0.
    for _ in range(200):
        address = Address(random_address())
        assert len(address) == 81
        assert address.as_trits()[-1] == 0


def test_a_token_from_the_environment_wins_and_the_banner_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secrets.env"
    generated = ensure_secrets(path)["BROKER_ADMIN_TOKEN"]
    assert where_from("BROKER_ADMIN_TOKEN", path) == f"BROKER_ADMIN_TOKEN in {path}"
    monkeypatch.setenv("BROKER_ADMIN_TOKEN", "chosen-by-the-seller-123")
    assert ensure_secrets(path)["BROKER_ADMIN_TOKEN"] == "chosen-by-the-seller-123"
    assert generated in path.read_text()  # the file keeps its own; the banner must not point to it
    assert where_from("BROKER_ADMIN_TOKEN", path).startswith(
        "BROKER_ADMIN_TOKEN from your environment"
    )
