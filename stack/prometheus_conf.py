"""`make run`'s Prometheus (Debian's, on loopback): what it scrapes and which alerts it loads.

Every process `make run` starts that serves metrics: each broker_auth replica (its API port's
/metrics), each ingest worker and the averager (their prometheus-client ports), Mosquitto (its
$SYS figures, served by iot-broker-metrics), Hornet (its Prometheus plugin), the faucet,
InfluxDB (/metrics), FerretDB (its debug handler's /debug/metrics) and Prometheus itself; the
alert rules are the repository's `prometheus/alerts.yml`, the compose stack's too.
The file is written as JSON, which is YAML: no YAML library in the product for it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deploy.host import REPO_ROOT
from stack.settings import StackSettings

ALERT_RULES = REPO_ROOT / "prometheus" / "alerts.yml"


def _job(name: str, ports: list[int], path: str = "/metrics") -> dict[str, object]:
    return {
        "job_name": name,
        "metrics_path": path,
        "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}],
    }


def config(s: StackSettings) -> dict[str, object]:
    workers = [s.ingest_metrics_port + i for i in range(s.ingest_workers)]
    jobs = [
        _job("broker_auth", [s.api_port + i for i in range(s.broker_auth_replicas)]),
        _job("ingest", workers),
        _job("mosquitto", [s.broker_metrics_port]),  # its $SYS figures, by iot-broker-metrics
        _job("hornet", [s.devnet_prometheus_port]),
        _job("faucet", [s.faucet_port]),
        _job("influxdb", [s.influx_port]),
        _job("prometheus", [s.prometheus_port]),
    ]
    if s.mongo_url is None:  # the embedded FerretDB (its debug handler serves the metrics)
        jobs.insert(-1, _job("ferretdb", [s.ferretdb_debug_port], "/debug/metrics"))
    if s.ingest_workers > 1:  # one worker keeps its own averages; several forward them
        jobs.insert(2, _job("averager", [s.ingest_averager_metrics_port]))
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s", "scrape_timeout": "4s"},
        "rule_files": [str(ALERT_RULES)],
        "scrape_configs": jobs,
    }


def write(s: StackSettings, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config(s), indent=2) + "\n")
    return path


def argv(s: StackSettings, config_file: Path, data: Path) -> list[str]:
    return [
        shutil.which("prometheus") or "prometheus",  # Debian's (scripts/bootstrap.sh)
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=7d",
        f"--web.listen-address=127.0.0.1:{s.prometheus_port}",
    ]
