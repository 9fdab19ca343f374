"""Buyer sessions: a random bearer token per login, stored only as its SHA-256.

The portal logs in once (`POST /api/sessions`, one scrypt check) and then sends the token; it
never keeps the password. A token is 256 random bits, so an unsalted fast hash is enough to
make a stolen `sessions` collection useless, and it keeps the lookup an `_id` equality (the
one query FerretDB answers without scanning). Expired documents are refused at lookup and
removed by `purge_expired` (no TTL indexes on FerretDB).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Store

TOKEN_BYTES = 32


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    token: str
    expires_at: dt.datetime


class Sessions:
    def __init__(self, store: Store, ttl_s: float) -> None:
        self.store = store
        self.ttl = dt.timedelta(seconds=ttl_s)
        self._next_purge = utcnow()

    def create(self, username: str) -> Session:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = utcnow()
        if now >= self._next_purge:  # now and then, on a login: expired ones go
            self.purge_expired()
            self._next_purge = now + self.ttl / 10
        expires_at = now + self.ttl
        self.store.sessions.insert_one(
            {
                "_id": token_hash(token),
                "username": username,
                "created_at": now,
                "expires_at": expires_at,
            }
        )
        return Session(token, expires_at)

    def username_of(self, token: str) -> str | None:
        """The buyer a live token belongs to, else None."""
        doc = self.store.sessions.find_one({"_id": token_hash(token)})
        if doc is None or as_utc(doc["expires_at"]) <= utcnow():
            return None
        return str(doc["username"])

    def revoke(self, token: str) -> None:
        self.store.sessions.delete_one({"_id": token_hash(token)})

    def revoke_all(self, username: str) -> int:
        """Every session of a buyer (a password change): returns how many."""
        return int(self.store.sessions.delete_many({"username": username}).deleted_count)

    def purge_expired(self) -> int:
        return int(
            self.store.sessions.delete_many({"expires_at": {"$lte": utcnow()}}).deleted_count
        )
