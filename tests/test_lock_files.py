"""The lock files pin every Python dependency with hashes and cover what pyproject.toml asks for
(a dependency added without `make lock` fails here, not at someone's install)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Installed by path or as the project itself, never from the index.
LOCAL = {"pysha3", "iot-telemetry-broker"}
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+)")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every pinned requirement of a lock file."""
    found: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for line in lock.read_text().splitlines():
        m = PIN.match(line)
        if m:
            current = norm(m.group(1))
            found[current] = (m.group(2), [])
        elif current and line.strip().startswith("--hash=sha256:"):
            found[current][1].append(line.strip().split(":", 1)[1].rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return found


def requirement_names(specs: list[str]) -> set[str]:
    return {norm(re.split(r"[<>=!~\[; ]", s, maxsplit=1)[0]) for s in specs}


def project() -> dict[str, list[str]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"runtime": data["dependencies"], "dev": data["optional-dependencies"]["dev"]}


@pytest.mark.parametrize("lock", ["requirements.lock", "requirements-prod.lock"])
def test_every_pin_has_hashes(lock: str) -> None:
    locked = pins(REPO / lock)
    assert len(locked) > 20
    for name, (version, hashes) in locked.items():
        assert hashes, f"{lock}: {name}=={version} without a hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), (name, hashes)
    assert not LOCAL & set(locked), "local packages are installed by path, not locked"
    # phx-filters (PyOTA) imports pkg_resources at run time: setuptools must keep it.
    major = int(locked["setuptools"][0].split(".")[0])
    assert major < 80, locked["setuptools"]


def test_the_locks_cover_pyproject() -> None:
    deps = project()
    dev_lock, prod_lock = pins(REPO / "requirements.lock"), pins(REPO / "requirements-prod.lock")
    runtime = requirement_names(deps["runtime"]) - LOCAL
    assert runtime <= set(prod_lock), runtime - set(prod_lock)
    assert runtime | requirement_names(deps["dev"]) <= set(dev_lock)
    # The image gets no test tools.
    assert not {"pytest", "playwright", "schemathesis"} & set(prod_lock)
    # Both resolve the shared packages to the same versions.
    for name in set(prod_lock) & set(dev_lock):
        assert prod_lock[name][0] == dev_lock[name][0], name


def test_installs_use_the_locks() -> None:
    bootstrap = (REPO / "scripts" / "bootstrap.sh").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in bootstrap
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r requirements-prod.lock" in dockerfile
