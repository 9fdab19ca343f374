"""At confirmation: the sealed credentials of a quote's payment, and the MQTT-only buyer they make.

A value transaction's message is neither signed nor covered by the bundle hash, so anyone who
sees the buyer's bundle can attach a copy under the same hash with another message. Every
attachment of every bundle that paid is therefore read, and only a message that opens with the
seller's key and names this quote, its address and its secret counts (a third party knows
none of the secret). The payment then belongs to the username it names: an account is made
for it (MQTT only: no HTTP login) with the password it names, or, if that username is an
MQTT-only buyer already, the same password proves it is the same buyer (later purchases
stack). Anything else leaves the payment unmatched with the reason; no account changes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from pydantic import ValidationError

from broker_auth.accounts.buyers import Accounts
from broker_auth.errors import ConflictError
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger import Ledger
from broker_auth.schemas import AccountCreate
from broker_auth.sealed import message
from broker_auth.sealed.keys import SellerKeys
from broker_auth.sealed.message import Credentials, Refused

log = logging.getLogger(__name__)

QUOTE_USED = "quote already used by an earlier payment"
SEVERAL_LOGINS = "several sealed messages name different logins"
USERNAME_TAKEN = "username taken"
UNREADABLE = "more copies of the paying bundle than the node lists: left for the seller to review"


def secret_hash(secret: str) -> str:
    """How a quote keeps its secret (random, 192 bits: a plain hash is enough)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Claimed:
    username: str


@dataclass(frozen=True)
class Waiting:
    """Not decided yet: asked again later (`why`, if any, is shown on the quote)."""

    why: str | None = None


class SealedClaims:
    def __init__(self, store: Store, ledger: Ledger, keys: SellerKeys, accounts: Accounts) -> None:
        self.store = store
        self.ledger = ledger
        self.keys = keys
        self.accounts = accounts

    def claim(self, order: Doc, payment: Doc) -> Claimed | Refused | Waiting:
        """Who `payment` to quote `order` is for, or why nobody, or Waiting (its bundles are
        not known yet, or the node could not list every copy of them)."""
        pid = str(payment["_id"])
        bundles = [str(b) for b in payment.get("bundles", [])]
        owner = order.get("username")
        if owner and order.get("sealed_payment") == pid:
            return Claimed(str(owner))  # claimed before a crash
        if not bundles:
            return Waiting()  # the watcher looks the bundles up again (evidence backfill)
        found = self._credentials(order, bundles)
        if owner:
            # A quote in use: its buyer's top-up (no login sealed, or the same one) is his;
            # a payment sealing another login is refused (that payer wanted an account).
            if isinstance(found, Credentials) and found.username != owner:
                return Refused(QUOTE_USED)
            return Claimed(str(owner))
        if isinstance(found, (Refused, Waiting)):
            return found
        try:
            AccountCreate(username=found.username, password=found.password)
        except ValidationError as exc:
            fields = sorted({str(e["loc"][0]) for e in exc.errors()})
            return Refused(f"{' and '.join(fields)} breaks the account rules")
        if not self.accounts.create_mqtt_only(found.username, found.password, str(order["_id"])):
            return Refused(USERNAME_TAKEN)
        claimed = self.store.orders.update_one(
            {"_id": order["_id"], "username": None},
            {"$set": {"username": found.username, "sealed_payment": pid}},
        )
        if not claimed.matched_count:
            fresh = self.store.orders.find_one({"_id": order["_id"]}) or {}
            if fresh.get("sealed_payment") != pid:
                raise ConflictError(f"quote {order['_id']} was claimed meanwhile")
        log.info("quote %s: sealed purchase by %r (payment %s)", order["_id"], found.username, pid)
        return Claimed(found.username)

    def _credentials(self, order: Doc, bundles: list[str]) -> Credentials | Refused | Waiting:
        address = str(order["address"])
        wanted = str(order.get("quote_secret_hash", ""))

        def secret_matches(secret: str) -> bool:
            return bool(wanted) and hmac.compare_digest(secret_hash(secret), wanted)

        found: list[Credentials] = []
        refused: list[Refused] = []
        every_copy_read = True
        for bundle_hash in bundles:
            messages, complete = self.ledger.messages_paying(bundle_hash, address)
            every_copy_read = every_copy_read and complete
            for trytes in messages:
                read = message.read(
                    trytes, self.keys.open, str(order["_id"]), address, secret_matches
                )
                if isinstance(read, Refused):
                    refused.append(read)
                else:
                    found.append(read)
        if not found:
            # The buyer's own copy may be among those the node did not list: never final.
            return message.most_advanced(refused) if every_copy_read else Waiting(UNREADABLE)
        if len({(c.username, c.password) for c in found}) > 1:
            return Refused(SEVERAL_LOGINS)
        return found[0]
