"""Devices: an MQTT client `device.<id>` that may publish only to `live/<id>/#`."""

from __future__ import annotations

import contextlib
import logging

from pymongo.errors import DuplicateKeyError

from broker_auth import acl_model, passwords
from broker_auth.clock import utcnow
from broker_auth.db import Store
from broker_auth.dynsec import DynsecError, DynsecUnavailableError
from broker_auth.errors import ConflictError, UnavailableError
from broker_auth.projection import Projector

log = logging.getLogger(__name__)


class Devices:
    def __init__(self, store: Store, projector: Projector) -> None:
        self.store = store
        self.projector = projector

    def create(self, device_id: str, password: str | None = None) -> tuple[str, str]:
        """Register a device; returns (username, password). The password is not kept."""
        password = password or passwords.generate_password()
        username = acl_model.device_username(device_id)
        password_hash = passwords.hash_password(password)
        with self.projector.lock:
            try:
                self.store.devices.insert_one(
                    {
                        "_id": device_id,
                        "username": username,
                        "password_hash": password_hash,
                        "created_at": utcnow(),
                    }
                )
            except DuplicateKeyError:
                raise ConflictError("device already exists") from None
            try:
                self.projector.ensure_device_client(device_id, password)
            except (DynsecUnavailableError, DynsecError) as exc:
                self.store.devices.delete_one({"_id": device_id})
                log.warning("device %r not created: broker unavailable (%s)", device_id, exc)
                raise UnavailableError("MQTT broker unavailable; try again shortly") from None
        log.info("device %r created", device_id)
        return username, password

    def ensure(self, device_id: str, password: str) -> None:
        """Idempotent registration with a known password (demo seed)."""
        existing = self.store.devices.find_one({"_id": device_id})
        if existing is None:
            with contextlib.suppress(ConflictError):
                self.create(device_id, password)
            return
        if passwords.verify_password(password, str(existing.get("password_hash", ""))):
            # Same password: only make sure the client exists (no kick of a connected device).
            with self.projector.lock:
                if self.projector.dynsec.get_client(existing["username"]) is not None:
                    return
        with self.projector.lock:
            self.projector.ensure_device_client(device_id, password)
            self.store.devices.update_one(
                {"_id": device_id}, {"$set": {"password_hash": passwords.hash_password(password)}}
            )
