"""First-run set-up of the Docker Compose stack (the one-shot `init` service).

Run as `python -m deploy.compose_init` inside the project image, before Mosquitto starts. It:

1. checks the secrets taken from `.env` (no placeholder left, long enough, a real deposit
   address), so a half-configured stack stops here with a clear message instead of failing
   later in a restart loop;
2. writes the dynamic-security bootstrap file (service accounts, static roles, anonymous
   group) unless it exists - after the first start the plugin owns that file and broker_auth
   changes it over `$CONTROL`, so it is never overwritten;
3. checks that the service passwords in `.env` still match that file (a changed `.env` would
   otherwise lock broker_auth and ingest out); `--rotate-service-passwords` rewrites just those
   two password hashes, with Mosquitto stopped;
4. creates a CA and a server certificate for the TLS listener unless they exist, and warns
   when they no longer cover the configured host names or expire soon.

Files are handed to Mosquitto's user (uid/gid 1883 in the eclipse-mosquitto image) when this
runs as root, so the broker can read its key and rewrite its dynamic-security file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker_auth.broker import acl_model
from deploy import dynsec_file
from deploy.tls import TlsFiles, ensure_tls_files

PLACEHOLDER = re.compile(r"change[-_]?me|replace[-_]?(me|with)", re.IGNORECASE)
ADDRESS = re.compile(r"[A-Z9]{81}([A-Z9]{9})?")
# InfluxDB's setup refuses shorter passwords; the rest is a floor against weak secrets.
MIN_LENGTH = {"INFLUXDB_ADMIN_PASSWORD": 8, "GRAFANA_ADMIN_PASSWORD": 8}
DEFAULT_MIN_LENGTH = 16
RENEW_WARNING = dt.timedelta(days=30)


class InitSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    dynsec_admin_password: str = Field(alias="DYNSEC_ADMIN_PASSWORD")
    ingest_mqtt_password: str = Field(alias="INGEST_MQTT_PASSWORD")
    # Checked only when given (the compose file hands it to `init` for this preflight).
    broker_metrics_mqtt_password: str | None = Field(None, alias="BROKER_METRICS_MQTT_PASSWORD")
    dynsec_file: Path = Field(
        Path("/init/mosquitto-data/dynamic-security.json"), alias="INIT_DYNSEC_FILE"
    )
    tls_dir: Path = Field(Path("/init/mosquitto-tls"), alias="INIT_TLS_DIR")
    # Names clients use to reach the broker over TLS; the first one is the certificate's CN.
    tls_hostnames: str = Field("localhost,mosquitto", alias="MQTT_TLS_HOSTNAMES")
    mosquitto_uid: int = Field(1883, alias="MOSQUITTO_UID")
    mosquitto_gid: int = Field(1883, alias="MOSQUITTO_GID")
    # Checked only when given: the compose file hands them to `init` for this preflight.
    broker_admin_token: str | None = Field(None, alias="BROKER_ADMIN_TOKEN")
    influx_token: str | None = Field(None, alias="INFLUX_TOKEN")
    influxdb_admin_password: str | None = Field(None, alias="INFLUXDB_ADMIN_PASSWORD")
    grafana_admin_password: str | None = Field(None, alias="GRAFANA_ADMIN_PASSWORD")
    # The seller's address list as mounted for broker_auth (checked only when given).
    deposit_addresses_file: Path | None = Field(None, alias="IOTA_DEPOSIT_ADDRESSES_FILE")
    seed_demo: bool = Field(False, alias="SEED_DEMO")
    demo_device_password: str | None = Field(None, alias="DEMO_DEVICE_PASSWORD")

    def hostnames(self) -> tuple[str, ...]:
        names = tuple(h.strip() for h in self.tls_hostnames.split(",") if h.strip())
        return names or ("localhost",)


class InitError(Exception):
    """A problem the operator must fix; the message says how (and never holds a secret)."""


def preflight(s: InitSettings) -> list[str]:
    """Return every problem with the configured secrets (names only, never values)."""
    problems: list[str] = []
    secrets = {
        "DYNSEC_ADMIN_PASSWORD": s.dynsec_admin_password,
        "INGEST_MQTT_PASSWORD": s.ingest_mqtt_password,
        "BROKER_METRICS_MQTT_PASSWORD": s.broker_metrics_mqtt_password,
        "BROKER_ADMIN_TOKEN": s.broker_admin_token,
        "INFLUX_TOKEN": s.influx_token,
        "INFLUXDB_ADMIN_PASSWORD": s.influxdb_admin_password,
        "GRAFANA_ADMIN_PASSWORD": s.grafana_admin_password,
        # plug-1's MQTT password matters only when broker_auth seeds the demo device.
        "DEMO_DEVICE_PASSWORD": s.demo_device_password if s.seed_demo else None,
    }
    for name, value in secrets.items():
        if value is None:
            continue
        if PLACEHOLDER.search(value):
            problems.append(f"{name} is still the placeholder from .env.example")
        elif len(value) < MIN_LENGTH.get(name, DEFAULT_MIN_LENGTH):
            problems.append(
                f"{name} is shorter than {MIN_LENGTH.get(name, DEFAULT_MIN_LENGTH)} characters"
            )
    if s.dynsec_admin_password == s.ingest_mqtt_password:
        problems.append("DYNSEC_ADMIN_PASSWORD and INGEST_MQTT_PASSWORD must differ")
    if s.deposit_addresses_file is not None:
        problems += _address_file_problems(s.deposit_addresses_file)
    return problems


def _address_file_problems(path: Path) -> list[str]:
    how = (
        "derive them from your own seed: iot-wallet addresses --seed-file jane.seed"
        " --count 1000 > deposit-addresses.txt (DEPOSIT_ADDRESSES_FILE in .env)"
    )
    if not path.is_file():
        return [f"no deposit-address file (IOTA_DEPOSIT_ADDRESSES_FILE): {how}"]
    lines = [x.strip() for x in path.read_text().splitlines()]
    addresses = [x for x in lines if x and not x.startswith("#")]
    bad = [i for i, a in enumerate(addresses, 1) if not ADDRESS.fullmatch(a)]
    if not addresses:
        return [f"the deposit-address file is empty: {how}"]
    if bad:
        return [
            f"the deposit-address file has {len(bad)} line(s) that are not 81-tryte addresses"
            f" (first: address {bad[0]})"
        ]
    return []


def _password_matches(entry: dict[str, object], password: str) -> bool | None:
    """Check a plugin-format PBKDF2-SHA512 hash; None when the entry has another format."""
    try:
        digest = base64.b64decode(str(entry["password"]), validate=True)
        salt = base64.b64decode(str(entry["salt"]), validate=True)
        iterations = int(str(entry["iterations"]))
    except (KeyError, ValueError, binascii.Error):
        return None
    candidate = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(candidate, digest)


def _service_passwords(s: InitSettings) -> dict[str, str]:
    return {
        acl_model.ADMIN_USERNAME: s.dynsec_admin_password,
        acl_model.INGEST_USERNAME: s.ingest_mqtt_password,
    }


def _load_dynsec(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InitError(f"{path} is not readable JSON ({e.__class__.__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
        raise InitError(f"{path} is not a dynamic-security file (no client list)")
    return doc


def _clients(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    clients = doc.get("clients")
    assert isinstance(clients, list)
    return {str(c.get("username")): c for c in clients if isinstance(c, dict)}


def check_service_passwords(s: InitSettings) -> list[str]:
    """Return the service usernames whose password in the file differs from `.env`."""
    clients = _clients(_load_dynsec(s.dynsec_file))
    stale: list[str] = []
    for username, password in _service_passwords(s).items():
        entry = clients.get(username)
        if entry is None or _password_matches(entry, password) is False:
            stale.append(username)
    return stale


def rotate_service_passwords(s: InitSettings) -> list[str]:
    """Rewrite the service accounts' password hashes from `.env`; everything else is kept."""
    doc = _load_dynsec(s.dynsec_file)
    clients = _clients(doc)
    changed: list[str] = []
    for username, password in _service_passwords(s).items():
        entry = clients.get(username)
        if entry is None:
            raise InitError(
                f"{username} is missing from {s.dynsec_file}; remove the file (and the "
                "broker's state with it) or add the client with mosquitto_ctrl"
            )
        if _password_matches(entry, password) is not True:
            entry.update(dynsec_file.hash_password(password))
            changed.append(username)
    if changed:
        tmp = s.dynsec_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
        tmp.replace(s.dynsec_file)
    return changed


def _certificate_warnings(files: TlsFiles, hostnames: Sequence[str]) -> list[str]:
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    warnings: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        covered = set(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        covered = set()
    missing = [h for h in hostnames if h not in covered]
    if missing:
        warnings.append(
            f"the TLS server certificate does not cover {', '.join(missing)}; to reissue it, "
            "empty the TLS volume and run init again (this makes a new CA: hand the new "
            "ca.crt to the TLS clients)"
        )
    left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if left < RENEW_WARNING:
        warnings.append(
            f"the TLS server certificate expires in {max(left.days, 0)} days; empty the TLS "
            "volume and run init again to reissue it (with a new CA)"
        )
    return warnings


def _hand_over(paths: Sequence[Path], uid: int, gid: int) -> None:
    """Give the files to Mosquitto's user; only root may, and only root needs to."""
    if os.geteuid() != 0:
        return
    for path in paths:
        os.chown(path, uid, gid)


def run(s: InitSettings, rotate: bool = False) -> list[str]:
    """Do the set-up; return warnings. Raises InitError when the stack must not start."""
    problems = preflight(s)
    if problems:
        raise InitError("fix these settings in .env:\n  - " + "\n  - ".join(problems))
    log: list[str] = []

    s.dynsec_file.parent.mkdir(parents=True, exist_ok=True)
    if not s.dynsec_file.exists():
        dynsec_file.write_bootstrap(s.dynsec_file, s.dynsec_admin_password, s.ingest_mqtt_password)
        log.append(f"wrote the dynamic-security bootstrap file {s.dynsec_file}")
    elif rotate:
        changed = rotate_service_passwords(s)
        log.append(
            f"updated the password of {', '.join(changed)}" if changed else "passwords unchanged"
        )
    else:
        stale = check_service_passwords(s)
        if stale:
            raise InitError(
                f"the password of {', '.join(stale)} in {s.dynsec_file} differs from .env "
                "(DYNSEC_ADMIN_PASSWORD / INGEST_MQTT_PASSWORD). To apply the new ones: "
                "docker compose stop mosquitto && docker compose run --rm init "
                "python -m deploy.compose_init --rotate-service-passwords && "
                "docker compose up -d"
            )
    os.chmod(s.dynsec_file, 0o600)

    created = not (s.tls_dir / "server.crt").exists()
    files = ensure_tls_files(s.tls_dir, s.hostnames())
    if created:
        log.append(f"created a CA and a server certificate for {', '.join(s.hostnames())}")
    for public in (files.ca_cert, files.server_cert):
        os.chmod(public, 0o644)
    os.chmod(files.server_key, 0o600)
    log.extend(f"warning: {w}" for w in _certificate_warnings(files, s.hostnames()))

    _hand_over(
        [
            s.dynsec_file.parent,
            s.dynsec_file,
            s.tls_dir,
            files.ca_cert,
            files.server_cert,
            files.server_key,
        ],
        s.mosquitto_uid,
        s.mosquitto_gid,
    )
    return log


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.compose_init", description=__doc__)
    parser.add_argument(
        "--rotate-service-passwords",
        action="store_true",
        help="rewrite the service accounts' password hashes from .env (stop Mosquitto first)",
    )
    args = parser.parse_args(argv)
    try:
        settings = InitSettings()
        for line in run(settings, rotate=args.rotate_service_passwords):
            print(f"init: {line}", flush=True)
    except InitError as e:
        print(f"init: {e}", file=sys.stderr, flush=True)
        return 2
    except ValidationError as e:
        # Name the variables only: pydantic's message would echo the values it was given.
        names = sorted({str(err["loc"][0]) for err in e.errors()})
        print(f"init: missing or invalid: {', '.join(names)}", file=sys.stderr, flush=True)
        return 2
    print("init: ready", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
