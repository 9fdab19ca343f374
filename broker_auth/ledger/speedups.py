"""Drop-in faster versions of PyOTA 2.1.0's hottest pure-Python helpers (same results).

PyOTA converts between trits and integers one digit at a time: generating one address takes
~0.4 s, finalising a bundle (which re-hashes until the bundle hash is "secure") up to seconds.
`install()` replaces, in the running process only:
- `Curl._transform` (transaction hashes) with `broker_auth.ledger.curl.transform`;
- Kerl's trits <-> bytes conversions (`iota.crypto.kerl.conv`) with `int(str, 3)` and
  `int.to_bytes` arithmetic;
- `TryteString.as_trits` and `TryteString.from_trits` with table lookups (PyOTA builds one
  integer per tryte; parsing a transaction spent more time there than in Curl).
tests/wallet/test_speedups.py checks each against the original on random input.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from broker_auth.ledger import curl

TRIT_HASH_LENGTH = 243
BYTE_HASH_LENGTH = 48
_CHUNK = 9  # trits per table entry when converting an int to trits
_CHUNK_BASE = 3**_CHUNK
_HALF = (3**TRIT_HASH_LENGTH - 1) // 2
_DIGITS = {-1: "0", 0: "1", 1: "2"}
_MOD = 1 << (8 * BYTE_HASH_LENGTH)
# Every 9-trit chunk value (unbalanced 0..3**9-1) -> its balanced trits, least significant first.
_CHUNK_TRITS: list[tuple[int, ...]] = [
    tuple(((v // 3**i) % 3) - 1 for i in range(_CHUNK)) for v in range(_CHUNK_BASE)
]
_installed = False
_install_lock = threading.Lock()
# PyOTA's own implementations, kept so tests can compare against them after install().
ORIGINALS: dict[str, Any] = {}


def convert_to_bytes(trits: list[int]) -> list[int]:
    """Balanced trits (least significant first) -> 48 signed bytes, two's complement."""
    digits = "".join(_DIGITS[t] for t in reversed(trits))
    value = int(digits, 3) - (3 ** len(trits) - 1) // 2 if digits else 0
    # PyOTA keeps the low 384 bits of |value| and negates that (only matters for a nonzero
    # 243rd trit, which Kerl never absorbs).
    magnitude = abs(value) % _MOD
    raw = ((magnitude if value >= 0 else -magnitude) % _MOD).to_bytes(BYTE_HASH_LENGTH, "big")
    return [b - 256 if b > 127 else b for b in raw]


def convert_to_trits(signed_bytes: list[int]) -> list[int]:
    """48 signed bytes (two's complement) -> 243 balanced trits, least significant first."""
    value = int.from_bytes(bytes(b & 0xFF for b in signed_bytes), "big", signed=True)
    unsigned = value + _HALF  # |value| < 2**383 < _HALF, so this is in 0..3**243-1
    trits: list[int] = []
    for _ in range(TRIT_HASH_LENGTH // _CHUNK):
        unsigned, chunk = divmod(unsigned, _CHUNK_BASE)
        trits.extend(_CHUNK_TRITS[chunk])
    return trits


def _tryte_trits() -> dict[int, tuple[int, ...]]:
    from iota.codecs import AsciiTrytesCodec

    table = {}
    for code, value in AsciiTrytesCodec.index.items():  # ASCII code -> 0..26
        value = value - 27 if value > 13 else value
        table[code] = _CHUNK_TRITS[value + 13][:3]
    return table


def install() -> None:
    """Patch PyOTA in this process. Idempotent and thread-safe."""
    with _install_lock:
        _install()


def _install() -> None:
    global _installed
    if _installed:
        return
    from iota.crypto.kerl import conv
    from iota.crypto.pycurl import Curl
    from iota.types import TryteString

    ORIGINALS.update(
        convertToBytes=conv.convertToBytes,
        convertToTrits=conv.convertToTrits,
        as_trits=TryteString.as_trits,
        from_trits=TryteString.__dict__["from_trits"],  # the classmethod, for subclasses too
        curl_transform=Curl._transform,
    )
    table = _tryte_trits()
    tryte_of = {trits: code for code, trits in table.items()}
    original_from_trits = ORIGINALS["from_trits"].__func__

    def as_trits(self: Any) -> list[int]:
        return list(itertools.chain.from_iterable(map(table.__getitem__, self._trytes)))

    def from_trits(cls: Any, trits: Any, *args: Any, **kwargs: Any) -> Any:
        trits = list(trits)
        if len(trits) % 3:
            trits += [0] * (3 - len(trits) % 3)
        triples = iter(trits)
        try:
            codes = bytes(map(tryte_of.__getitem__, zip(triples, triples, triples, strict=True)))
        except KeyError:  # not balanced trits: PyOTA's own answer, whatever it is
            return original_from_trits(cls, trits, *args, **kwargs)
        return cls(codes, *args, **kwargs)

    def curl_transform(self: Any) -> None:
        state = curl.transform(bytes(t + 1 for t in self._state))
        self._state = [t - 1 for t in state]

    conv.convertToBytes = convert_to_bytes
    conv.convertToTrits = convert_to_trits
    TryteString.as_trits = as_trits
    TryteString.from_trits = classmethod(from_trits)
    Curl._transform = curl_transform
    _installed = True
