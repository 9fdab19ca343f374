"""The project services' compose health checks, run as the container would run them.

Each check is taken from `docker-compose config` and pointed at a real endpoint on a free port:
the real ingest worker for `ingest`, a real Mosquitto for `simulator`, and small HTTP servers
that answer like broker_auth's /healthz (200 or 503) and devnet's getNodeInfo for the others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from testing import procs
from tests.compose.conftest import IngestWorker, compose_config


def run_check(service: str, port: int, host: str = "127.0.0.1") -> int:
    """Run `service`'s health check with its port (and for the simulator its host) replaced."""
    config = compose_config()["services"][service]
    test = config["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], service
    code = test[3]
    container_port = {
        "broker_auth": 8000,
        "ingest": 9102,
        "broker_metrics": 9234,
        "devnet": 14265,
        "simulator": 1883,
    }[service]
    assert str(container_port) in code
    code = code.replace(str(container_port), str(port))
    code = code.replace("'mosquitto'", f"'{host}'").replace("127.0.0.1", host)
    # The image's `python` is the project's interpreter: the same one runs the check here.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    return result.returncode


class Stub(BaseHTTPRequestHandler):
    status = 200
    requests: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        type(self).requests.append((self.command, self.path, headers, body))
        payload = json.dumps({"status": "ok" if self.status == 200 else "degraded"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[type[Stub], int]]:
    handler = type("Handler", (Stub,), {"status": 200, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()
    server.server_close()


def test_broker_auth_check_follows_healthz(stub: tuple[type[Stub], int]) -> None:
    handler, port = stub
    assert run_check("broker_auth", port) == 0
    assert handler.requests[-1][:2] == ("GET", "/healthz")
    handler.status = 503  # a dependency is down
    assert run_check("broker_auth", port) != 0
    assert run_check("broker_auth", procs.free_port()) != 0


def test_devnet_check_asks_get_node_info(stub: tuple[type[Stub], int]) -> None:
    handler, port = stub
    assert run_check("devnet", port) == 0
    method, path, headers, body = handler.requests[-1]
    assert (method, path) == ("POST", "/")
    assert json.loads(body) == {"command": "getNodeInfo"}
    assert headers["x-iota-api-version"] == "1"  # names are case-insensitive
    assert run_check("devnet", procs.free_port()) != 0


def test_ingest_check_reads_the_real_worker_metrics(ingest_worker: IngestWorker) -> None:
    assert run_check("ingest", ingest_worker.metrics_port) == 0
    assert run_check("ingest", procs.free_port()) != 0


def test_simulator_check_reaches_the_broker(mosquitto: procs.MosquittoHandle) -> None:
    assert run_check("simulator", mosquitto.port) == 0
    assert run_check("simulator", procs.free_port()) != 0


def test_broker_metrics_check_reads_the_real_exporter(tmp_path: Path) -> None:
    """The exporter serves /metrics even before it reaches the broker (broker_connected 0)."""
    port = procs.free_port()
    exporter = procs.python_service(
        "broker-metrics",
        "broker_metrics",
        tmp_path,
        env={
            "MQTT_PORT": str(procs.free_port()),  # no broker there
            "BROKER_METRICS_MQTT_PASSWORD": "not-used-here",
            "BROKER_METRICS_PORT": str(port),
        },
        ready=lambda: procs.port_open(port),
    ).start()
    try:
        assert run_check("broker_metrics", port) == 0
    finally:
        exporter.stop()
    assert run_check("broker_metrics", procs.free_port()) != 0
