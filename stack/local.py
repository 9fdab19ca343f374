"""`make run`: every role with embedded defaults, supervised by supervisord in the foreground.

supervisord restarts a crashed process; Ctrl-C (SIGINT) stops every process and waits for them.
Children inherit the environment built here, so no secret is written into supervisord.conf.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from deploy.host import VENV_BIN, find_binary, forward_signals, http_ok
from stack import console, ferretdb, influxdb, mosquitto_conf, prometheus_conf, seller_pool
from stack.mosquitto_conf import MosquittoPorts
from stack.secrets import ensure_secrets, where_from
from stack.settings import StackSettings

LOG_MAX_BYTES = 10 * 1024 * 1024  # per log file, then rotated
LOG_BACKUPS = 3


def _program(
    name: str,
    argv: list[str],
    priority: int,
    directory: Path,
    environment: dict[str, str] | None = None,
) -> str:
    """A supervisord program; its output goes to `<data>/logs/<name>.log` (rotated)."""
    command = " ".join(_quote(a) for a in argv)
    # Only non-secret settings here (ports, ids); secrets come from the inherited environment.
    env_line = (
        "environment=" + ",".join(f'{k}="{v}"' for k, v in environment.items()) + "\n"
        if environment
        else ""
    )
    return f"""
[program:{name}]
command={command}
{env_line}directory={directory}
priority={priority}
autostart=true
autorestart=true
startsecs=2
startretries=20
stopasgroup=true
killasgroup=true
stopwaitsecs=15
redirect_stderr=true
stdout_logfile={directory / "logs" / f"{name}.log"}
stdout_logfile_maxbytes={LOG_MAX_BYTES}
stdout_logfile_backups={LOG_BACKUPS}
"""


def _quote(arg: str) -> str:
    # supervisord splits commands shell-style; our paths and flags contain no quotes.
    return f'"{arg}"' if " " in arg else arg


def service_environment(
    s: StackSettings, secrets: dict[str, str], mongo_url: str
) -> dict[str, str]:
    return {
        **secrets,
        "PYTHONUNBUFFERED": "1",
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(s.mqtt_port),
        "MQTT_TLS_PORT": str(s.mqtt_tls_port),
        "MQTT_WS_PORT": str(s.mqtt_ws_port),
        "MONGO_URL": mongo_url,
        "INFLUX_URL": f"http://127.0.0.1:{s.influx_port}",
        "INFLUX_BUCKET": influxdb.DATABASE,
        "IOTA_NODE_URL": f"http://127.0.0.1:{s.devnet_port}",
        "IOTA_NODE_ZMQ_URL": f"tcp://127.0.0.1:{s.devnet_zmq_port}",
        "IOTA_FAUCET_URL": f"http://127.0.0.1:{s.faucet_port}",
        "IOTA_MWM": str(s.iota_mwm),
        "IOTA_DEPOSIT_ADDRESSES_FILE": str(s.data_dir / seller_pool.POOL_FILE),
        "SELLER_KEY_FILE": str(s.data_dir / "seller-keys.json"),
        "API_HOST": "127.0.0.1",
        "API_PORT": str(s.api_port),
        "INGEST_METRICS_PORT": str(s.ingest_metrics_port),
        "INGEST_AVERAGER_METRICS_PORT": str(s.ingest_averager_metrics_port),
        "BROKER_METRICS_PORT": str(s.broker_metrics_port),
        "SEED_DEMO": "true",
        "SIM_USERNAME": "device.plug-1",
        "SIM_PASSWORD": secrets["DEMO_DEVICE_PASSWORD"],
    }


def broker_auth_programs(s: StackSettings, data: Path) -> list[str]:
    """BROKER_AUTH_REPLICAS processes on API ports 8000, 8001, ...; one holds the lease."""
    argv = [str(VENV_BIN / "iot-broker-auth")]
    if s.broker_auth_replicas == 1:
        return [_program("broker_auth", argv, 20, data)]
    return [
        _program(f"broker_auth-{i}", argv, 20, data, {"API_PORT": str(s.api_port + i)})
        for i in range(s.broker_auth_replicas)
    ]


def ingest_programs(s: StackSettings, data: Path) -> list[str]:
    """One worker owning its averages, or INGEST_WORKERS on a shared subscription + averager."""
    argv = [str(VENV_BIN / "iot-ingest")]
    if s.ingest_workers == 1:
        return [_program("ingest", argv, 30, data)]
    workers = [
        _program(
            f"ingest-{i}",
            argv,
            30,
            data,
            {
                "INGEST_AVERAGES": "forward",
                "INGEST_SHARE_GROUP": "ingest",
                # Worker 0 keeps the single worker's id (INGEST_CLIENT_ID of secrets.env), so its
                # session and what it holds; the others get svc.ingest:worker-<i>.
                **({} if i == 0 else {"INGEST_CLIENT_ID": f"worker-{i}"}),
                "INGEST_METRICS_PORT": str(s.ingest_metrics_port + i),
            },
        )
        for i in range(s.ingest_workers)
    ]
    return [*workers, _program("averager", [str(VENV_BIN / "iot-averager")], 30, data)]


def _pool_keeper_program(s: StackSettings, data: Path) -> str:
    """Jane's `iot-wallet pool-keeper` with her local seed: the pool never runs dry."""
    pool = seller_pool.SellerPool(data, s.deposit_pool_target)
    argv = [
        str(VENV_BIN / "iot-wallet"),
        "pool-keeper",
        "--seed-file",
        str(pool.seed_file),
        "--api",
        f"http://127.0.0.1:{s.api_port}",
        "--low-water",
        str(max(1, s.deposit_pool_target // 2)),
        "--target",
        str(s.deposit_pool_target),
        # The first addresses are in the file broker_auth loads at start.
        "--start",
        str(len(pool.derived())),
    ]
    return _program("pool-keeper", argv, 40, data)


def _prometheus_program(s: StackSettings, data: Path) -> str:
    """Prometheus on loopback, scraping every process above, with the alert rules."""
    config = prometheus_conf.write(s, data / "prometheus")
    return _program(
        "prometheus", prometheus_conf.argv(s, config, data / "prometheus" / "tsdb"), 50, data
    )


def _influxdb_program(s: StackSettings, data: Path) -> str:
    argv = [
        str(VENV_BIN / "python"),
        "-m",
        "stack.influxdb",
        "serve",
        "--data-dir",
        str(data / "influxdb"),
        "--port",
        str(s.influx_port),
        "--rpc-port",
        str(s.influx_rpc_port),
    ]
    return _program("influxdb", argv, 10, data)


def _devnet_programs(s: StackSettings, data: Path) -> list[str]:
    """Hornet with its coordinator, and the faucet that spends the genesis seed."""
    node = [
        str(VENV_BIN / "iot-devnet"),
        "node",
        "--port",
        str(s.devnet_port),
        "--zmq-port",
        str(s.devnet_zmq_port),
        "--prometheus-port",
        str(s.devnet_prometheus_port),
        "--milestone-interval",
        str(s.devnet_milestone_interval),
        "--merkle-depth",
        str(s.devnet_merkle_depth),
        "--mwm",
        str(s.iota_mwm),
        "--data-dir",
        str(data / "devnet"),
        *(["--merkle-cache", s.devnet_merkle_cache] if s.devnet_merkle_cache else []),
    ]
    faucet = [
        str(VENV_BIN / "iot-devnet"),
        "faucet",
        "--port",
        str(s.faucet_port),
        "--node",
        f"http://127.0.0.1:{s.devnet_port}",
        "--mwm",
        str(s.iota_mwm),
        "--data-dir",
        str(data / "devnet"),
    ]
    return [_program("hornet", node, 10, data), _program("faucet", faucet, 15, data)]


def write_supervisor_config(s: StackSettings, run_dir: Path, embedded_mongo: bool) -> Path:
    data = s.data_dir
    ports = MosquittoPorts(s.mqtt_port, s.mqtt_tls_port, s.mqtt_ws_port)
    secrets = ensure_secrets(data / "secrets.env")
    conf_file, _ = mosquitto_conf.prepare(
        data / "mosquitto",
        secrets["DYNSEC_ADMIN_PASSWORD"],
        secrets["INGEST_MQTT_PASSWORD"],
        ports,
    )
    (data / "ferretdb").mkdir(parents=True, exist_ok=True)
    logs = console.log_dir(data)
    programs = [
        _program("mosquitto", [find_binary("mosquitto"), "-c", str(conf_file)], 10, data),
        _influxdb_program(s, data),
        *_devnet_programs(s, data),
        *broker_auth_programs(s, data),
        *ingest_programs(s, data),
        _program(
            "simulator",
            [str(VENV_BIN / "iot-sim"), "--device", "plug-1", "--rate", str(s.sim_rate_hz)],
            40,
            data,
        ),
        _pool_keeper_program(s, data),
        _program("broker_metrics", [str(VENV_BIN / "iot-broker-metrics")], 30, data),
        _prometheus_program(s, data),
    ]
    if embedded_mongo:
        programs.insert(
            0,
            _program(
                "ferretdb",
                ferretdb.argv(data / "ferretdb", s.mongo_port, s.ferretdb_debug_port),
                5,
                data,
            ),
        )
    conf = run_dir / "supervisord.conf"
    conf.write_text(
        f"""[supervisord]
nodaemon=true
silent=true
{"user=root" if os.geteuid() == 0 else ""}
logfile={logs / "supervisord.log"}
logfile_maxbytes={LOG_MAX_BYTES}
logfile_backups={LOG_BACKUPS}
loglevel=info
pidfile={run_dir / "supervisord.pid"}
childlogdir={run_dir}

[unix_http_server]
file={run_dir / "supervisor.sock"}
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{run_dir / "supervisor.sock"}
"""
        + "".join(programs)
    )
    return conf


def run(s: StackSettings | None = None) -> int:
    s = s or StackSettings()
    data = s.data_dir
    run_dir = data / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    embedded_mongo = s.mongo_url is None
    mongo_url = s.mongo_url or f"mongodb://127.0.0.1:{s.mongo_port}/"
    secrets = ensure_secrets(data / "secrets.env")
    # The first addresses, loaded by broker_auth at start; the pool keeper adds the next ones.
    seller_pool.SellerPool(data, s.deposit_pool_target).ensure_file()
    conf = write_supervisor_config(s, run_dir, embedded_mongo)
    env = {**os.environ, **service_environment(s, secrets, mongo_url)}
    supervisord = subprocess.Popen(
        [str(VENV_BIN / "supervisord"), "-n", "-c", str(conf)], env=env, start_new_session=True
    )
    forward_signals(supervisord)
    shown = console.Console(console.log_dir(data), program_names(conf))
    shown.start()
    print(f"starting; every process logs to {data / 'logs'}/<name>.log", flush=True)
    if _announce_when_ready(s, supervisord, data):
        shown.stack_is_up()
    while True:
        try:
            code = supervisord.wait()
            shown.stop()
            return code
        except KeyboardInterrupt:  # pragma: no cover - SIGINT is forwarded by the handler
            continue


def program_names(conf: Path) -> list[str]:
    return re.findall(r"^\[program:([^\]]+)\]$", conf.read_text(), flags=re.MULTILINE)


def _announce_when_ready(
    s: StackSettings, supervisord: subprocess.Popen[bytes], data: Path
) -> bool:
    """The banner once broker_auth answers (True), else a pointer to the logs (False)."""
    deadline = time.monotonic() + 120
    health = f"http://127.0.0.1:{s.api_port}/healthz"
    while time.monotonic() < deadline and supervisord.poll() is None:
        if http_ok(health):
            print(
                f"""
=====================================================================
 IoT telemetry broker is up (Ctrl-C stops everything)
   API + portal   http://127.0.0.1:{s.api_port}/        (OpenAPI: /docs)
   MQTT           127.0.0.1:{s.mqtt_port}  TLS :{s.mqtt_tls_port}  WebSocket :{s.mqtt_ws_port}
   free averages  mosquitto_sub -p {s.mqtt_port} -t 'avg/#' -v
   devnet         Hornet http://127.0.0.1:{s.devnet_port}/  faucet :{s.faucet_port}
   metrics        Prometheus http://127.0.0.1:{s.prometheus_port}/  (alerts: /alerts)
   seller seed    {data / "seller.seed"} (deposit addresses, iot-wallet sweep)
   time series    InfluxDB http://127.0.0.1:{s.influx_port}/  database {influxdb.DATABASE}
                  (admin: {influxdb.ADMIN_USER}, INFLUX_ADMIN_PASSWORD in secrets.env)
   admin token    {where_from("BROKER_ADMIN_TOKEN", data / "secrets.env")}
   TLS CA         {data / "mosquitto" / "tls" / "ca.crt"}
   logs           {data / "logs"}/<name>.log, e.g. tail -F {data / "logs" / "broker_auth.log"}
                  (this console shows our services' warnings and errors only)
   try the story  make demo
=====================================================================
""",
                flush=True,
            )
            return True
        time.sleep(0.5)
    print(f"broker_auth did not answer within 120 s: see {data / 'logs'}/*.log", flush=True)
    return False
