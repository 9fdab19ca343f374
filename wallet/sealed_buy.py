"""`iot-wallet buy`: live access with nothing but a payment (a sealed purchase).

Ask broker_auth for a quote, seal the MQTT login you choose to the seller's key with the
quote's id, address and secret (broker_auth/sealed/message.py, protocol v1), pay the quote with
that message in the value transaction, and wait until the quote shows the username made.
"""

from __future__ import annotations

import base64
import time
import urllib.parse
from dataclasses import dataclass

from pydantic import ValidationError

from broker_auth.schemas import AccountCreate
from broker_auth.sealed.message import Credentials, seal
from wallet.payments import SeedLike, WalletError, get_json, is_confirmed, pay, post_json

JUDGED_S = 10.0  # after our bundle confirmed, the watcher has judged its message by then


@dataclass(frozen=True)
class Purchase:
    quote_id: str
    username: str
    amount_iota: int
    address: str
    bundle_hash: str
    seconds: float


def buy(
    api_url: str,
    node_url: str,
    seed: SeedLike,
    product_id: str,
    hours: float,
    username: str,
    password: str,
    *,
    mwm: int | None = None,
    timeout: float = 600.0,
    interval: float = 1.0,
) -> Purchase:
    started = time.monotonic()
    try:  # the account rules, before anything is paid
        AccountCreate(username=username, password=password)
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors()})
        raise WalletError(
            f"{' and '.join(fields)} breaks the account rules: username 3 to 32 of a-z, 0-9,"
            " '_', '-' (a letter first), password 10 to 128 printable characters"
        ) from None
    api = api_url.rstrip("/")
    # The key first: a failure there costs the seller no deposit address.
    key = get_json(f"{api}/api/seller-key")
    quote = post_json(f"{api}/api/quotes", {"product_id": product_id, "hours": hours})
    credentials = Credentials(
        quote_id=str(quote["quote_id"]),
        address=str(quote["address"]),
        secret=str(quote["quote_secret"]),
        username=username,
        password=password,
    )
    message = seal(credentials, base64.b64decode(str(key["public_key"])))
    amount = int(str(quote["amount_iota"]))
    paid = pay(
        node_url,
        seed,
        credentials.address,
        str(quote["tag"]),
        amount,
        min_weight_magnitude=mwm,
        message=message,
    )
    confirmed_at: float | None = None
    status_url = f"{api}/api/quotes/{urllib.parse.quote(credentials.quote_id, safe='')}"
    while True:
        status = get_json(status_url)
        if status.get("username"):
            return Purchase(
                credentials.quote_id,
                str(status["username"]),
                amount,
                credentials.address,
                paid.bundle_hash,
                time.monotonic() - started,
            )
        # A reason is ours only once our own bundle is confirmed and had time to be judged
        # (a stranger's payment to the quote can be refused first).
        if status.get("reason") and confirmed_at is None and is_confirmed(node_url, paid.tail_hash):
            confirmed_at = time.monotonic()
        if status.get("reason") and confirmed_at and time.monotonic() - confirmed_at > JUDGED_S:
            raise WalletError(
                f"quote {credentials.quote_id}: paid, but the sealed login was refused:"
                f" {status['reason']} (the seller sees the payment as unmatched)"
            )
        if time.monotonic() - started > timeout:
            raise WalletError(
                f"quote {credentials.quote_id}: no access after {timeout:.0f} s (status"
                f" {status.get('status')}); check it later at {status_url}"
            )
        time.sleep(interval)
