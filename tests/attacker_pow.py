"""Proof of work done by the attacker herself (tests only).

Hornet's attachToTangle refuses to do the PoW for an incomplete bundle ("Invalid bundle
length"), but stores any transaction with valid PoW sent with storeTransactions. An attacker
does the PoW locally; this is that, in Python (at the devnets' weight 5: ~0.1 s).
"""

from __future__ import annotations

import secrets

from broker_auth.ledger import ternary
from broker_auth.ledger.curl import _INITIAL_STATE, HASH_TRITS, absorb, transform

NONCE_TRYTES = 27


def do_pow(trytes: str, min_weight_magnitude: int) -> tuple[str, str]:
    """(trytes with a nonce whose hash ends in `min_weight_magnitude` zero trits, the hash)."""
    body = ternary.to_trits(trytes[:-NONCE_TRYTES])
    split = len(body) - (HASH_TRITS - 3 * NONCE_TRYTES)
    midstate = absorb(_INITIAL_STATE, body[:split])
    last_block_prefix = body[split:]
    while True:
        nonce = "".join(secrets.choice(ternary.ALPHABET) for _ in range(NONCE_TRYTES))
        state = transform(last_block_prefix + ternary.to_trits(nonce) + midstate[HASH_TRITS:])
        if state[HASH_TRITS - min_weight_magnitude : HASH_TRITS].count(1) == min_weight_magnitude:
            return trytes[:-NONCE_TRYTES] + nonce, ternary.from_trits(state[:HASH_TRITS])
