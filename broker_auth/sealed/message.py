"""The sealed message of a sealed purchase, protocol v1, byte by byte (README: Sealed purchases).

1. payload: the UTF-8 JSON object {"v": 1, "quote_id", "address", "secret", "username",
   "password"} (`secret` is the quote's `quote_secret`, `address` its 81-tryte address);
2. box: libsodium's sealed box of the payload to the seller's X25519 public key,
   `epk (32) || crypto_box(payload, nonce = BLAKE2b-24(epk || pk), pk, esk)` (16-byte MAC);
3. text: ASCII `sealed1:` followed by the standard base64 (padded) of the box;
4. trytes: PyOTA's `TryteString.from_bytes(text)`: each byte b as the two trytes
   ALPHABET[b % 27], ALPHABET[b // 27] with ALPHABET = "9ABCDEFGHIJKLMNOPQRSTUVWXYZ".

The trytes are the message (`signatureMessageFragment`) of the value transaction paying the
quote: one transaction, 2187 trytes, so the text is at most 1093 bytes and the payload at most
765 (base64 never yields a zero byte, which PyOTA's decoding would strip from the end). A
message split over more transactions is not read: only the paying transaction's own counts.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass

from iota import TryteString
from nacl.public import PublicKey, SealedBox

from broker_auth.ledger.ternary import ALPHABET

VERSION = 1
PREFIX = b"sealed1:"
MAX_MESSAGE_TRYTES = 2187
MAX_TEXT_BYTES = MAX_MESSAGE_TRYTES // 2  # 1093
BOX_OVERHEAD = 48  # ephemeral public key (32) and MAC (16)
# Base64 of at most this many bytes fits after the prefix.
MAX_BOX_BYTES = (MAX_TEXT_BYTES - len(PREFIX)) // 4 * 3  # 813
MAX_PAYLOAD_BYTES = MAX_BOX_BYTES - BOX_OVERHEAD  # 765


@dataclass(frozen=True)
class Credentials:
    """What the buyer sealed: which quote it pays and the MQTT login it wants."""

    quote_id: str
    address: str
    secret: str
    username: str
    password: str

    def payload(self) -> bytes:
        return json.dumps(
            {
                "v": VERSION,
                "quote_id": self.quote_id,
                "address": self.address,
                "secret": self.secret,
                "username": self.username,
                "password": self.password,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

    def __repr__(self) -> str:  # never the secret or the password, in logs or tracebacks
        return f"Credentials(quote_id={self.quote_id!r}, username={self.username!r})"


@dataclass(frozen=True)
class Refused:
    """Why a message cannot serve as the sealed credentials (kept with the payment)."""

    reason: str


# The reasons, from the least to the most progress (the most advanced one is reported).
NO_MESSAGE = "no sealed message"
DOES_NOT_OPEN = "sealed message does not open with the seller's key"
DOES_NOT_PARSE = "sealed message is not a v1 payload"
OTHER_QUOTE = "sealed message names another quote, address or secret"
PROGRESS = (NO_MESSAGE, DOES_NOT_OPEN, DOES_NOT_PARSE, OTHER_QUOTE)


class MessageTooLongError(ValueError):
    pass


def seal(credentials: Credentials, public_key: bytes) -> str:
    """The message trytes carrying `credentials` sealed to `public_key` (wallets, tests)."""
    payload = credentials.payload()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageTooLongError(
            f"the sealed payload is {len(payload)} bytes; at most {MAX_PAYLOAD_BYTES} fit in"
            " one transaction (choose a shorter password)"
        )
    box = SealedBox(PublicKey(public_key)).encrypt(payload)
    return encode_box(box)


def encode_box(box: bytes) -> str:
    text = PREFIX + base64.b64encode(box)
    if len(text) > MAX_TEXT_BYTES:
        raise MessageTooLongError(f"{len(text)} bytes do not fit in one transaction's message")
    return str(TryteString.from_bytes(text))


def box_of(trytes: str) -> bytes | None:
    """The sealed box a message carries, or None if it is not a v1 sealed message."""
    body = trytes.rstrip("9")
    if not body or len(trytes) > MAX_MESSAGE_TRYTES or any(c not in ALPHABET for c in trytes):
        return None
    if len(body) % 2:
        body += "9"
    try:
        text = TryteString(body).encode(errors="strict")
    except (ValueError, TypeError):  # a pair above 255: not bytes
        return None
    if not text.startswith(PREFIX):
        return None
    try:
        box = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return box if BOX_OVERHEAD < len(box) <= MAX_BOX_BYTES else None


def read(
    trytes: str,
    open_box: Callable[[bytes], bytes | None],
    quote_id: str,
    address: str,
    secret_matches: Callable[[str], bool],
) -> Credentials | Refused:
    """The credentials this message seals for this quote, or why not."""
    box = box_of(trytes)
    if box is None:
        return Refused(NO_MESSAGE)
    payload = open_box(box)
    if payload is None:
        return Refused(DOES_NOT_OPEN)
    credentials = parse(payload)
    if credentials is None:
        return Refused(DOES_NOT_PARSE)
    if (
        credentials.quote_id != quote_id
        or credentials.address != address
        or not secret_matches(credentials.secret)
    ):
        return Refused(OTHER_QUOTE)
    return credentials


def parse(payload: bytes) -> Credentials | None:
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    names = ("quote_id", "address", "secret", "username", "password")
    if (
        not isinstance(doc, dict)
        or type(doc.get("v")) is not int  # not true, not 1.0
        or doc["v"] != VERSION
        or not all(isinstance(doc.get(n), str) and _utf8(doc[n]) for n in names)
    ):
        return None
    return Credentials(*(str(doc[n]) for n in names))


def _utf8(text: str) -> bool:
    """JSON may escape lone surrogates ("\\ud800"), which no UTF-8 text holds."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def most_advanced(refusals: list[Refused]) -> Refused:
    """Of several attachments' refusals, the one that got furthest (NO_MESSAGE if none)."""
    return max(refusals, key=lambda r: PROGRESS.index(r.reason), default=Refused(NO_MESSAGE))
