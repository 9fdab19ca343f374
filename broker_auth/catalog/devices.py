"""Devices: an MQTT client `device.<id>` that may publish only to `live/<id>/#`."""

from __future__ import annotations

import contextlib
import logging

from pymongo.errors import DuplicateKeyError

from broker_auth.accounts import passwords
from broker_auth.broker import acl_model
from broker_auth.broker.errors import BrokerError
from broker_auth.broker.projector import Projector
from broker_auth.errors import ConflictError, NotFoundError, UnavailableError
from broker_auth.infra.clock import utcnow
from broker_auth.infra.db import Doc, Store

log = logging.getLogger(__name__)


class Devices:
    def __init__(self, store: Store, projector: Projector) -> None:
        self.store = store
        self.projector = projector

    def create(self, device_id: str, password: str | None = None) -> tuple[str, str]:
        """Register a device (or re-enable a deleted one); returns (username, password). The
        password is not kept."""
        password = password or passwords.generate_password()
        username = acl_model.device_username(device_id)
        password_hash = passwords.hash_password(password)
        doc = {
            "_id": device_id,
            "username": username,
            "password_hash": password_hash,
            "created_at": utcnow(),
            "enabled": True,
        }
        with self.projector.leader.grants_lock:
            try:
                self.store.devices.insert_one(doc)
            except DuplicateKeyError:
                revived = self.store.devices.find_one_and_update(
                    {"_id": device_id, "enabled": False}, {"$set": doc}
                )
                if revived is None:
                    raise ConflictError("device already exists") from None
            try:
                self.projector.ensure_device_client(device_id, password)
            except BrokerError as exc:
                self.store.devices.delete_one({"_id": device_id})
                log.warning("device %r not created: broker unavailable (%s)", device_id, exc)
                raise UnavailableError("MQTT broker unavailable; try again shortly") from None
        log.info("device %r created", device_id)
        return username, password

    def list(self) -> list[Doc]:
        return list(self.store.devices.find({}, {"password_hash": 0}).sort("_id", 1))

    def rotate_password(self, device_id: str) -> str:
        """A new MQTT password; the broker cuts the device until it logs in with it."""
        device = self._enabled(device_id)
        password = passwords.generate_password()
        with self.projector.leader.grants_lock:
            self.projector.dynsec.set_client_password(str(device["username"]), password)
            self.projector.dynsec.kick(str(device["username"]))
            self.store.devices.update_one(
                {"_id": device_id}, {"$set": {"password_hash": passwords.hash_password(password)}}
            )
        log.info("device %r: password rotated", device_id)
        return password

    def delete(self, device_id: str) -> None:
        """Cut the device at once and refuse its logins; its stored readings stay."""
        device = self._enabled(device_id)
        with self.projector.leader.grants_lock:
            # First MongoDB (reconciliation then deletes the client too if the broker is down).
            self.store.devices.update_one(
                {"_id": device_id},
                {
                    "$set": {"enabled": False, "deleted_at": utcnow()},
                    "$unset": {"password_hash": ""},
                },
            )
            self.projector.dynsec.delete_client(str(device["username"]))
        log.info("device %r deleted", device_id)

    def _enabled(self, device_id: str) -> Doc:
        device = self.store.devices.find_one({"_id": device_id, "enabled": {"$ne": False}})
        if device is None:
            raise NotFoundError("no such device")
        return device

    def ensure(self, device_id: str, password: str) -> None:
        """Idempotent registration with a known password (demo seed)."""
        existing = self.store.devices.find_one({"_id": device_id})
        if existing is None:
            with contextlib.suppress(ConflictError):
                self.create(device_id, password)
            return
        if passwords.verify_password(password, str(existing.get("password_hash", ""))):
            # Same password: only make sure the client exists (no kick of a connected device).
            with self.projector.leader.grants_lock:
                if self.projector.dynsec.get_client(existing["username"]) is not None:
                    return
        with self.projector.leader.grants_lock:
            self.projector.ensure_device_client(device_id, password)
            self.store.devices.update_one(
                {"_id": device_id}, {"$set": {"password_hash": passwords.hash_password(password)}}
            )
