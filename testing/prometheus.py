"""Debian's Prometheus for tests: scraping given targets every second, with the alert rules."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from testing import procs

RULES = procs.REPO_ROOT / "prometheus" / "alerts.yml"


@dataclass
class Prometheus:
    proc: procs.Proc
    url: str

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[Any]:
        r = httpx.get(
            f"{self.url}/api/v1/query_range",
            params={"query": expr, "start": start, "end": end, "step": step},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        result: list[Any] = r.json()["data"]["result"]
        return result

    def alerts(self) -> dict[str, str]:
        """Alert name -> state (pending, firing) of the alerts it holds now."""
        found = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return {str(a["labels"]["alertname"]): str(a["state"]) for a in found}

    def targets_up(self) -> dict[str, list[str]]:
        active = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        jobs: dict[str, list[str]] = {}
        for target in active:
            jobs.setdefault(target["labels"]["job"], []).append(target["health"])
        return jobs


def start_prometheus(workdir: Path, jobs: dict[str, str]) -> Prometheus:
    """`jobs`: job name -> base URL whose /metrics it scrapes. Waits until every target is up."""
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus missing: scripts/bootstrap.sh installs Debian's"
    workdir.mkdir(parents=True, exist_ok=True)
    port = procs.free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": job,
                        "static_configs": [{"targets": [base.removeprefix("http://")]}],
                    }
                    for job, base in jobs.items()
                ],
            }
        )
    )
    url = f"http://127.0.0.1:{port}"
    proc = procs.Proc(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        workdir,
        ready=lambda: procs.http_ok(f"{url}/-/ready"),
    )
    proc.start()
    prometheus = Prometheus(proc, url)
    procs.wait_for(
        lambda: prometheus.targets_up() == {job: ["up"] for job in jobs}, 30, "targets scraped"
    )
    return prometheus
