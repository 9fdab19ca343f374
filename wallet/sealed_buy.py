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

from broker_auth.sealed.message import Credentials, seal
from wallet.payments import SeedLike, WalletError, get_json, pay, post_json


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
    api = api_url.rstrip("/")
    quote = post_json(f"{api}/api/quotes", {"product_id": product_id, "hours": hours})
    key = get_json(f"{api}/api/seller-key")
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
        if status.get("reason"):
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
