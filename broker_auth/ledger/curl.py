"""Curl-P-81, the sponge behind IOTA transaction hashes, done fast in Python (used by speedups).

PyOTA's pure-Python Curl needs ~7 ms per transform (~0.25 s per transaction hash). Here the
729-trit state is a `bytes` of shifted trits (trit + 1) and one round is a handful of C-level
operations: Curl reads the state at positions 364*k mod 729, which is the interleaving of two
reversed slices, and the truth table is applied to all 729 cells at once through
`int.from_bytes` arithmetic (x + 3y never carries between bytes) and `bytes.translate`.
That is ~0.5 ms per transform, with bit-for-bit the same results as PyOTA.
"""

from __future__ import annotations

from broker_auth.ledger import ternary

HASH_TRITS = 243
STATE_TRITS = 3 * HASH_TRITS
ROUNDS = 81

# PyOTA's truth table, indexed by prev + 3 * next + 4 (trits in -1..1); here by shifted trits.
_TRUTH = (1, 0, -1, 1, -1, 0, -1, 1, 0)
_TABLE = bytes(t + 1 for t in _TRUTH) + bytes(256 - len(_TRUTH))
_INITIAL_STATE = b"\x01" * STATE_TRITS  # all trits 0


def transform(state: bytes) -> bytes:
    """81 rounds of Curl on a 729-byte shifted-trit state."""
    from_bytes = int.from_bytes
    for _ in range(ROUNDS):
        # a[k] = state[364 * k mod 729]: even k walk down from 0 (mod 729), odd k from 364.
        a = bytearray(STATE_TRITS)
        a[0::2] = state[0:1] + state[728:364:-1]
        a[1::2] = state[364:0:-1]
        b = a[1:] + state[0:1]  # b[k] = a[k + 1], wrapping to state[0]
        mixed = from_bytes(a, "big") + 3 * from_bytes(b, "big")
        state = mixed.to_bytes(STATE_TRITS, "big").translate(_TABLE)
    return state


def absorb(state: bytes, trits: bytes) -> bytes:
    """Absorb whole 243-trit blocks (callers pass transaction-sized input)."""
    for offset in range(0, len(trits), HASH_TRITS):
        state = transform(trits[offset : offset + HASH_TRITS] + state[HASH_TRITS:])
    return state


def hash_trytes(trytes: str) -> str:
    """Curl-P-81 hash of a transaction's trytes (length a multiple of 81)."""
    return ternary.from_trits(absorb(_INITIAL_STATE, ternary.to_trits(trytes))[:HASH_TRITS])
