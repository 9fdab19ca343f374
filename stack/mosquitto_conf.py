"""Mosquitto's files for a data directory: mosquitto.conf rendered from
`mosquitto/mosquitto.conf.template`, the dynamic-security bootstrap and TLS material."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from broker_auth.broker.acl_model import Client, Role
from deploy import dynsec_file
from deploy.host import REPO_ROOT
from deploy.tls import TlsFiles, ensure_tls_files

TEMPLATE = REPO_ROOT / "mosquitto" / "mosquitto.conf.template"
DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
# Built by scripts/bootstrap.sh from mosquitto/plugin/ (client ids belong to their user).
SESSION_PLUGIN = REPO_ROOT / ".tools" / "lib" / "mosquitto_session_ownership.so"


@dataclass(frozen=True)
class MosquittoPorts:
    mqtt: int = 1883
    tls: int = 8883
    websocket: int = 9001


def render(
    data_dir: Path,
    dynsec_file: Path,
    tls: TlsFiles,
    ports: MosquittoPorts = MosquittoPorts(),
    bind_address: str = "127.0.0.1",
) -> str:
    # Started as root, Mosquitto would drop to the `mosquitto` user and lose access to our files.
    user_line = "user root" if os.geteuid() == 0 else ""
    if not SESSION_PLUGIN.exists():
        raise FileNotFoundError(f"{SESSION_PLUGIN} is missing: run scripts/bootstrap.sh")
    return Template(TEMPLATE.read_text()).substitute(
        user_line=user_line,
        data_dir=str(data_dir),
        session_plugin=str(SESSION_PLUGIN),
        dynsec_plugin=DYNSEC_PLUGIN,
        dynsec_file=str(dynsec_file),
        bind=bind_address,
        mqtt_port=ports.mqtt,
        tls_port=ports.tls,
        ws_port=ports.websocket,
        ca_file=str(tls.ca_cert),
        cert_file=str(tls.server_cert),
        key_file=str(tls.server_key),
    )


def prepare(
    workdir: Path,
    admin_password: str,
    ingest_password: str,
    ports: MosquittoPorts,
    extra_clients: Sequence[Client] = (),
    extra_roles: Sequence[Role] = (),
) -> tuple[Path, TlsFiles]:
    """Write the dynsec bootstrap (first time only), TLS material and mosquitto.conf."""
    workdir.mkdir(parents=True, exist_ok=True)
    dynsec = workdir / "dynamic-security.json"
    if not dynsec.exists():
        dynsec_file.write_bootstrap(
            dynsec, admin_password, ingest_password, extra_clients, extra_roles
        )
    tls = ensure_tls_files(workdir / "tls")
    conf = workdir / "mosquitto.conf"
    conf.write_text(render(workdir, dynsec, tls, ports))
    return conf, tls
