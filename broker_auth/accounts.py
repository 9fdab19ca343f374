"""Buyer accounts: the API login and the MQTT client share one username and password."""

from __future__ import annotations

import logging

from pymongo.errors import DuplicateKeyError

from broker_auth import passwords
from broker_auth.clock import utcnow
from broker_auth.db import Store
from broker_auth.dynsec import DynsecError, DynsecUnavailableError
from broker_auth.errors import ConflictError, UnavailableError
from broker_auth.projection import Projector

log = logging.getLogger(__name__)


class Accounts:
    def __init__(self, store: Store, projector: Projector) -> None:
        self.store = store
        self.projector = projector

    def create(self, username: str, password: str) -> None:
        """Store the account, then create its MQTT client; undo the account if that fails."""
        password_hash = passwords.hash_password(password)  # slow: outside the lock
        with self.projector.lock:
            try:
                self.store.accounts.insert_one(
                    {
                        "_id": username,
                        "password_hash": password_hash,
                        "created_at": utcnow(),
                        "mqtt_missing": False,
                    }
                )
            except DuplicateKeyError:
                raise ConflictError("username already taken") from None
            try:
                self.projector.ensure_buyer_client(username, password)
            except (DynsecUnavailableError, DynsecError) as exc:
                self.store.accounts.delete_one({"_id": username})
                log.warning("account %r not created: broker unavailable (%s)", username, exc)
                raise UnavailableError("MQTT broker unavailable; try again shortly") from None
        log.info("account %r created", username)

    def authenticate(self, username: str, password: str) -> bool:
        account = self.store.accounts.find_one({"_id": username})
        if account is None:
            passwords.burn_time(password)
            return False
        if not passwords.verify_password(password, str(account.get("password_hash", ""))):
            return False
        if account.get("mqtt_missing"):
            self._recreate_client(username, password)
        return True

    def _recreate_client(self, username: str, password: str) -> None:
        """The only moment the clear-text password is at hand again: restore the MQTT client."""
        try:
            self.projector.ensure_buyer_client(username, password)
        except (DynsecUnavailableError, DynsecError) as exc:
            log.warning("could not recreate MQTT client %r yet: %s", username, exc)
            return
        self.store.accounts.update_one({"_id": username}, {"$set": {"mqtt_missing": False}})
        log.warning("recreated missing MQTT client %r at the buyer's login", username)
