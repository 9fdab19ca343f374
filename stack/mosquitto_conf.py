"""Render mosquitto.conf from `mosquitto/mosquitto.conf.template` for a data directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from string import Template

from deploy.tls import TlsFiles

REPO_ROOT = Path(__file__).resolve().parent.parent
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
