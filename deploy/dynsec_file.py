"""Write Mosquitto's dynamic-security bootstrap file (the plugin's own JSON format).

Passwords are stored the way the plugin stores them: PBKDF2-HMAC-SHA512 over a random salt,
both base64, so the file never holds a clear-text password.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from broker_auth.broker import acl_model
from broker_auth.broker.acl_model import Client, Group, Role

# Mosquitto checks a password with the iteration count stored beside it.
PBKDF2_ITERATIONS = 101_000


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> dict[str, object]:
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def render(
    clients: Iterable[Client],
    roles: Iterable[Role],
    groups: Iterable[Group],
    anonymous_group: str | None = acl_model.ANONYMOUS_GROUP,
) -> dict[str, object]:
    doc: dict[str, object] = {
        "clients": [
            {
                "username": c.username,
                "textName": c.textname,
                **hash_password(c.password),
                "roles": [{"rolename": r} for r in c.roles],
                "groups": [{"groupname": g} for g in c.groups],
            }
            for c in clients
        ],
        "roles": [
            {"rolename": r.rolename, "textName": r.textname, "acls": [a.as_dict() for a in r.acls]}
            for r in roles
        ],
        "groups": [
            {"groupname": g.groupname, "roles": [{"rolename": r} for r in g.roles], "clients": []}
            for g in groups
        ],
        "defaultACLAccess": dict(acl_model.DEFAULT_ACL_ACCESS),
    }
    if anonymous_group:
        doc["anonymousGroup"] = anonymous_group
    return doc


def write_bootstrap(
    path: Path,
    admin_password: str,
    ingest_password: str,
    extra_clients: Iterable[Client] = (),
    extra_roles: Iterable[Role] = (),
) -> None:
    """Create the file with the service accounts, static roles and the anonymous group.

    Devices, products and grants are added later by broker_auth over `$CONTROL`; tests that
    exercise the pipeline alone pass their devices as `extra_clients`/`extra_roles`.
    """
    clients = [
        Client(acl_model.ADMIN_USERNAME, admin_password, (acl_model.ROLE_ADMIN,)),
        Client(acl_model.INGEST_USERNAME, ingest_password, (acl_model.ROLE_INGEST,)),
        *extra_clients,
    ]
    doc = render(clients, [*acl_model.static_roles(), *extra_roles], acl_model.static_groups())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
    tmp.replace(path)
