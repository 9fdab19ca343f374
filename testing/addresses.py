"""IOTA addresses for tests and benchmarks."""

from __future__ import annotations

import secrets

from broker_auth.ledger import ternary


def random_address() -> str:
    """An address nobody holds a seed of: Kerl addresses end in a zero trit and nodes refuse
    value transfers to any other address."""
    last = secrets.choice(ternary.ZERO_LAST_TRIT)
    return "".join(secrets.choice(ternary.ALPHABET) for _ in range(80)) + last
