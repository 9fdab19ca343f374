"""Trytes, trits and integers in IOTA's balanced ternary, as plain `str`/`bytes`/`int`.

A trit is stored as one byte holding `trit + 1` (0, 1 or 2) so that whole transactions can be
handled with C-speed `bytes` operations; see `broker_auth.ledger.curl`.
"""

from __future__ import annotations

import re

ALPHABET = "9ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # the one definition; everything else imports it
# Trytes whose third trit is 0: Kerl addresses end in one (nodes refuse value to any other).
ZERO_LAST_TRIT = "9ABCDWXYZ"
HASH_TRYTES = 81
TRANSACTION_TRYTES = 2673
TAG_TRYTES = 27
NULL_HASH = "9" * HASH_TRYTES
MAX_TIMESTAMP_VALUE = (3**27 - 1) // 2  # largest 27-trit number: IRI's attachment upper bound
SUPPLY = (3**33 - 1) // 2  # the IOTA token supply: the largest 33-trit number

_TRYTES_RE = re.compile(r"[9A-Z]*")


def _tryte_value(char: str) -> int:
    value = ALPHABET.index(char)
    return value if value <= 13 else value - 27


def _balanced_trits(value: int, count: int) -> list[int]:
    trits = []
    for _ in range(count):
        remainder = value % 3
        value //= 3
        if remainder == 2:
            remainder = -1
            value += 1
        trits.append(remainder)
    return trits


# tryte char -> its 3 trits (least significant first) as shifted bytes, and the way back.
_TRYTE_TO_TRITS = {c: bytes(t + 1 for t in _balanced_trits(_tryte_value(c), 3)) for c in ALPHABET}
_TRITS_TO_TRYTE = {v: k for k, v in _TRYTE_TO_TRITS.items()}


def is_trytes(value: object, length: int | None = None) -> bool:
    """True for a str of tryte characters (exactly `length` of them when given)."""
    if not isinstance(value, str) or _TRYTES_RE.fullmatch(value) is None:
        return False
    return length is None or len(value) == length


def to_trits(trytes: str) -> bytes:
    """Trytes -> shifted trits (one byte per trit, value trit + 1)."""
    return b"".join(map(_TRYTE_TO_TRITS.__getitem__, trytes))


def from_trits(trits: bytes) -> str:
    """Shifted trits (length a multiple of 3) -> trytes."""
    return "".join(_TRITS_TO_TRYTE[trits[i : i + 3]] for i in range(0, len(trits), 3))


def to_int(trytes: str) -> int:
    """Balanced-ternary trytes (least significant first) -> int."""
    result = 0
    for char in reversed(trytes):
        result = result * 27 + _tryte_value(char)
    return result


def from_int(value: int, length: int) -> str:
    """int -> `length` trytes, balanced ternary, least significant first."""
    trits = _balanced_trits(value, 3 * length)
    return from_trits(bytes(t + 1 for t in trits))


def trailing_zero_trits(trytes: str) -> int:
    """How many trits at the end are 0: the weight magnitude of a transaction hash."""
    trits = to_trits(trytes)
    stripped = trits.rstrip(b"\x01")
    return len(trits) - len(stripped)


def pad_tag(tag: str) -> str:
    """Tags shorter than 27 trytes are padded with 9s, as IRI does in findTransactions."""
    return tag + "9" * (TAG_TRYTES - len(tag))
