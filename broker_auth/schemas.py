"""Request and response bodies of the HTTP API, validated strictly (unknown fields refused).

The public contract (DESIGN.md's fields): the HTTP layer (`api/`) validates with it and the
domain modules (orders, payments, grants, products, revenue) answer with it, so it sits at the
top of the package and imports nothing of either."""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
)

from broker_auth.infra.clock import rfc3339

# Dots are reserved for service and device accounts (`svc.*`, `device.*`), so a buyer can
# never take one of their names.
USERNAME_PATTERN = r"^[a-z][a-z0-9_-]{2,31}$"
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
TAG_PATTERN = r"^[9A-Z]{27}$"
# The total IOTA supply: no price or amount can sensibly exceed it.
MAX_IOTA = 2_779_530_283_277_761
MAX_TOPIC_FILTER_LENGTH = 256

OrderStatus = Literal["pending", "unconfirmed", "confirmed", "expired", "cancelled"]
UtcDateTime = Annotated[dt.datetime, PlainSerializer(rfc3339, return_type=str)]


def printable(value: str) -> str:
    """A password without control characters (they break terminals and logs)."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain control characters")
    return value


NewPassword = Annotated[str, AfterValidator(printable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


def check_topic_filter(value: str) -> str:
    """A valid MQTT subscription filter (MQTT 3.1.1/5 section 4.7), without `$` topics."""
    if not value or len(value.encode("utf-8")) > MAX_TOPIC_FILTER_LENGTH:
        raise ValueError(f"must be 1 to {MAX_TOPIC_FILTER_LENGTH} bytes")
    if value.startswith("$"):
        raise ValueError("must not start with $")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ValueError("must not contain control characters")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError("'#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError("'+' must be a whole level")
    return value


class AccountCreate(_Strict):
    username: str = Field(
        pattern=USERNAME_PATTERN,
        description="3 to 32 characters: a-z first, then a-z, 0-9, '_' or '-'",
        examples=["john"],
    )
    password: NewPassword = Field(
        min_length=10,
        max_length=128,
        description="10 to 128 characters: the login password (MQTT gets its own)",
        examples=["correct-horse-battery"],
    )


class AccountOut(BaseModel):
    username: str
    mqtt_password: str = Field(
        description="the MQTT password (not the login password), shown only in this answer"
    )


class MqttPasswordOut(BaseModel):
    mqtt_password: str = Field(description="the new MQTT password, shown only in this answer")


class PasswordChange(_Strict):
    old_password: str = Field(min_length=1, max_length=1024)
    new_password: NewPassword = Field(
        min_length=10, max_length=128, description="10 to 128 characters"
    )


class LoginIn(_Strict):
    # Not the sign-up rules: a login says nothing about what passwords are allowed.
    username: str = Field(min_length=1, max_length=64, examples=["john"])
    password: str = Field(min_length=1, max_length=1024)


class SessionOut(BaseModel):
    token: str = Field(description="send as `Authorization: Bearer <token>`")
    expires_at: UtcDateTime


class ProductIn(_Strict):
    id: str = Field(pattern=ID_PATTERN, examples=["plug-1-live"])
    topic_filter: str = Field(
        description="MQTT filter under the live prefix, e.g. live/plug-1/#",
        examples=["live/plug-1/#"],
    )
    price_iota_per_hour: int = Field(gt=0, le=MAX_IOTA, examples=[500])
    description: str = Field("", max_length=500)

    @field_validator("topic_filter")
    @classmethod
    def _filter(cls, value: str) -> str:
        return check_topic_filter(value)


class ProductOut(BaseModel):
    id: str
    topic_filter: str
    price_iota_per_hour: int
    description: str


class ProductAdminOut(ProductOut):
    active: bool = Field(description="false: disabled, no new orders")


class ProductPatch(_Strict):
    price_iota_per_hour: int | None = Field(None, gt=0, le=MAX_IOTA, description="new orders only")
    description: str | None = Field(None, max_length=500)
    active: bool | None = Field(
        None, description="false: no new orders; running grants keep their time"
    )


class RevenueRow(BaseModel):
    day: dt.date = Field(description="UTC day the payments were confirmed")
    product_id: str | None = Field(description="null: value no order held (unmatched)")
    confirmed_iota: int
    payments: int


class DeviceCreate(_Strict):
    device_id: str = Field(pattern=ID_PATTERN, examples=["plug-2"])


class DeviceCreated(BaseModel):
    device_id: str
    username: str = Field(description="MQTT username: device.<device_id>")
    password: str = Field(description="MQTT password, shown only in this answer")


class DeviceOut(BaseModel):
    device_id: str
    username: str
    enabled: bool = Field(description="false once deleted: it can no longer log in")
    created_at: UtcDateTime
    last_reading_at: UtcDateTime | None = Field(
        description="newest reading in the time-series store (null: none, or not readable)"
    )


class DevicePassword(BaseModel):
    password: str = Field(description="the new MQTT password, shown only in this answer")


class OrderCreate(_Strict):
    product_id: str = Field(pattern=ID_PATTERN, examples=["plug-1-live"])
    hours: float = Field(gt=0, allow_inf_nan=False, examples=[0.1])

    @field_validator("hours")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value


class OrderCreated(BaseModel):
    order_id: str
    product_id: str
    hours: float
    amount_iota: int = Field(description="ceil(price_iota_per_hour * hours)")
    address: str = Field(description="deposit address (81 trytes)")
    tag: str = Field(description="27-tryte tag identifying this order's transfers")
    status: OrderStatus
    expires_at: UtcDateTime = Field(description="end of the payment window")


class QuoteCreated(BaseModel):
    quote_id: str = Field(description="seal it in the payment's message; read the status by it")
    address: str = Field(description="deposit address (81 trytes)")
    tag: str = Field(description="27-tryte tag for the transfer")
    amount_iota: int = Field(description="ceil(price_iota_per_hour * hours)")
    expires_at: UtcDateTime = Field(description="end of the payment window")
    quote_secret: str = Field(description="seal it in the payment's message; shown only here")


class QuoteOut(BaseModel):
    quote_id: str
    status: OrderStatus
    paid_iota: int = Field(description="seen on the tangle, confirmed or not")
    confirmed_iota: int = Field(description="confirmed on the tangle")
    username: str | None = Field(
        description="the MQTT username the sealed message created, once it was accepted"
    )
    reason: str | None = Field(
        None, description="why a confirmed payment's sealed message was refused (if it was)"
    )


class SellerKeyOut(BaseModel):
    public_key: str = Field(description="the seller's X25519 public key, base64 (32 bytes)")
    alg: str = Field(description="x25519-sealedbox: libsodium's crypto_box_seal")


class OrderOut(OrderCreated):
    paid_iota: int = Field(description="seen on the tangle, confirmed or not")
    confirmed_iota: int = Field(description="confirmed on the tangle")
    price_iota_per_hour: int
    created_at: UtcDateTime
    provisional_until: UtcDateTime | None = Field(
        None, description="instant access: provisional access given by a pending payment ends"
    )


class GrantOut(BaseModel):
    product_id: str
    topic_filter: str
    expires_at: UtcDateTime
    provisional_until: UtcDateTime | None = Field(
        None, description="instant access: part of the time rests on payments not confirmed yet"
    )


class GrantAdminOut(GrantOut):
    username: str
    provisional_iota: int = Field(
        0, description="unconfirmed value this grant's provisional access rests on (at risk)"
    )


class PaymentOut(BaseModel):
    payment_id: str = Field(description="<address>:<value accounted before this payment>")
    address: str
    amount_iota: int = Field(description="confirmed increase of the address's ledger value")
    matched: bool = Field(description="false when no watched order held the address")
    order_id: str | None
    product_id: str | None
    username: str | None
    credited: bool
    confirmed_at: UtcDateTime = Field(description="when the watcher saw the confirmed value")
    ledger_index: int = Field(description="milestone of the ledger state that showed it")
    bundles: list[str] = Field(description="confirmed, valid bundles that paid (evidence)")
    refund_due_iota: int = Field(
        0, description="value beyond the order's amount while its product was off sale"
    )
    grant_seconds: float | None = Field(None, description="access time it bought, once priced")
    unmatched_reason: str | None = Field(
        None, description="why a matched address's payment buys nothing (a refused sealed message)"
    )


# 1,000 a call keeps any body the schema allows (even \u-escaped) under MAX_IMPORT_BODY_BYTES.
MAX_ADDRESSES_PER_CALL = 1000


class DepositAddressesIn(_Strict):
    addresses: list[Annotated[str, Field(max_length=90)]] = Field(
        min_length=1,
        max_length=MAX_ADDRESSES_PER_CALL,
        description="81-tryte addresses (or 90 with checksum) derived from the seller's seed",
    )


class DepositAddressesLoaded(BaseModel):
    added: int
    already_known: int
    refused: list[dict[str, str]] = Field(description='[{"address", "reason"}]')


class DepositAddressOut(BaseModel):
    address: str
    state: Literal["free", "assigned", "closed", "swept"]
    order_id: str | None
    confirmed_iota: int = Field(description="confirmed value recorded as payments on it")


class DepositAddressList(BaseModel):
    counts: dict[str, int]
    addresses: list[DepositAddressOut]


class SweptIn(_Strict):
    addresses: list[Annotated[str, Field(pattern=r"^[9A-Z]{81}([9A-Z]{9})?$")]] = Field(
        min_length=1, max_length=MAX_ADDRESSES_PER_CALL
    )
    bundle: str = Field(pattern=r"^[9A-Z]{81}$", description="the sweep's bundle hash")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    mongo: Literal["ok", "down"]
    broker: Literal["ok", "down"]
    node: Literal["ok", "down"]
    deposit_addresses: Literal["ok", "low", "empty"] = Field(
        "ok", description="free addresses of the pool: low below DEPOSIT_POOL_LOW_WATER"
    )
    free_addresses: int = 0
    leader: bool = Field(
        False, description="this replica holds the payments lease (runs watcher and expiry)"
    )


class ErrorOut(BaseModel):
    detail: str | list[object]
