"""The embedded time-series store: InfluxDB OSS 1.13 (`influxd`, built by scripts/bootstrap.sh).

The writers (ingest, broker_auth) use influxdb-client's v2 API exactly as against InfluxDB 2.7:
bucket `telemetry` (1.x: database `telemetry`, its default retention policy), any org (1.x
ignores it) and a token, which on 1.x is `<user>:<password>`. Users, least privilege:
- an admin (ALL PRIVILEGES), used only to provision and by tests and benchmarks to read back;
- a writer with WRITE on the database only: its token is what the services get (INFLUX_TOKEN);
- a reader with READ only, for the seller's device list (INFLUX_READ_TOKEN, optional).

    python -m stack.influxdb serve --data-dir .data/influxdb --port 8086

runs influxd as a child (signals forwarded) and provisions it once it answers: database, users
and grants, from INFLUX_ADMIN_PASSWORD and INFLUX_TOKEN in the environment (never the command
line). Provisioning is idempotent: every start re-applies it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from deploy.host import find_binary, forward_signals

DATABASE = "telemetry"
ADMIN_USER = "iot-admin"
WRITER_USER = "iot-writer"
READER_USER = "iot-reader"


@dataclass(frozen=True)
class Credentials:
    admin_password: str
    writer_password: str
    reader_password: str | None = None

    @property
    def admin_token(self) -> str:
        return f"{ADMIN_USER}:{self.admin_password}"

    @property
    def writer_token(self) -> str:
        return f"{WRITER_USER}:{self.writer_password}"

    @property
    def reader_token(self) -> str | None:
        return f"{READER_USER}:{self.reader_password}" if self.reader_password else None


def password_of(token: str, user: str, variable: str) -> str:
    name, sep, password = token.partition(":")
    if not sep or name != user or not password:
        raise ValueError(f"{variable} must be {user}:<password> for the embedded InfluxDB")
    return password


def render_config(data_dir: Path, http_port: int, rpc_port: int) -> str:
    """influxd's configuration: loopback only, nothing reported or sent anywhere."""
    return f"""# Written by stack/influxdb.py at every start.
reporting-disabled = true
# The RPC service (backup/restore) defaults to :8088; on loopback, on a port of our own.
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{data_dir / "meta"}"

[data]
  dir = "{data_dir / "data"}"
  wal-dir = "{data_dir / "wal"}"
  # Default: the WAL is fsynced before a write is answered (measured: nothing acknowledged is
  # lost on SIGKILL; see the fault tests).
  wal-fsync-delay = "0s"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = true
  flux-enabled = true
  log-enabled = false
  pprof-enabled = false
  # The services write batches of up to INGEST_BATCH_SIZE points; leave room above that.
  max-body-size = 25000000

[logging]
  level = "warn"
  suppress-logo = true

[subscriber]
  enabled = false

[continuous_queries]
  log-enabled = false
"""


def write_config(data_dir: Path, http_port: int, rpc_port: int) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "influxdb.conf"
    path.write_text(render_config(data_dir, http_port, rpc_port))
    return path


def ping(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ping", timeout=1).status_code == 204
    except httpx.HTTPError:
        return False


def quoted(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql(
    url: str,
    statement: str,
    token: str | None,
    params: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Run one InfluxQL statement; raises RuntimeError with InfluxDB's reason when it fails.

    `client`: a kept connection for callers that ask often (else one per call)."""
    headers = {"Authorization": f"Token {token}"} if token else {}
    post = client.post if client is not None else httpx.post
    r = post(f"{url}/query", data={"q": statement, **(params or {})}, headers=headers, timeout=30)
    body: dict[str, Any] = r.json() if r.content else {}
    errors = [body.get("error")] + [res.get("error") for res in body.get("results", [])]
    reasons = [e for e in errors if e]
    if r.status_code != 200 or reasons:
        raise RuntimeError(f"InfluxDB refused {statement.split()[0]}: {reasons or r.status_code}")
    return body


def provision(url: str, credentials: Credentials, database: str = DATABASE) -> None:
    """Create the admin (first start only), the database, the writer and reader and grants."""
    # Allowed without authentication only while no user exists; afterwards refused, and the
    # admin authenticates below (or provisioning fails with InfluxDB's reason).
    with contextlib.suppress(RuntimeError):
        influxql(
            url,
            f'CREATE USER "{ADMIN_USER}" WITH PASSWORD {quoted(credentials.admin_password)}'
            " WITH ALL PRIVILEGES",
            None,
        )
    admin = credentials.admin_token
    influxql(url, f'CREATE DATABASE "{database}"', admin)
    users = influxql(url, "SHOW USERS", admin)["results"][0].get("series", [{}])[0]
    existing = {v[0] for v in users.get("values", [])}
    wanted = [(WRITER_USER, credentials.writer_password, "WRITE")]
    if credentials.reader_password:
        wanted.append((READER_USER, credentials.reader_password, "READ"))
    for user, password, privilege in wanted:
        if user in existing:  # keep it in step with the secret the services hold
            influxql(url, f'SET PASSWORD FOR "{user}" = {quoted(password)}', admin)
        else:
            influxql(url, f'CREATE USER "{user}" WITH PASSWORD {quoted(password)}', admin)
        influxql(url, f'GRANT {privilege} ON "{database}" TO "{user}"', admin)


def serve(data_dir: Path, port: int, rpc_port: int, credentials: Credentials) -> int:
    config = write_config(data_dir, port, rpc_port)
    child = subprocess.Popen([find_binary("influxd"), "-config", str(config)])
    forward_signals(child)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while child.poll() is None and not ping(url):
        if time.monotonic() > deadline:
            child.kill()
            raise SystemExit("influxd did not answer within 60 s")
        time.sleep(0.1)
    if child.poll() is None:
        provision(url, credentials)
        print(f"influxdb: {url}, database {DATABASE}, writer {WRITER_USER}", flush=True)
    return child.wait()


def credentials_from_env(env: Mapping[str, str]) -> Credentials:
    reader = env.get("INFLUX_READ_TOKEN")
    return Credentials(
        env["INFLUX_ADMIN_PASSWORD"],
        password_of(env["INFLUX_TOKEN"], WRITER_USER, "INFLUX_TOKEN"),
        password_of(reader, READER_USER, "INFLUX_READ_TOKEN") if reader else None,
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m stack.influxdb")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run influxd and provision it")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--port", type=int, default=8086)
    run.add_argument("--rpc-port", type=int, default=8087)
    args = p.parse_args(argv)
    sys.exit(serve(args.data_dir, args.port, args.rpc_port, credentials_from_env(os.environ)))


if __name__ == "__main__":
    main()
