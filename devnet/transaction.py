"""One IOTA transaction: field layout of the 2673 trytes, parsing, and IRI's attachToTangle."""

from __future__ import annotations

import time
from dataclasses import dataclass

from iota import TryteString
from iota.crypto.kerl import Kerl

from devnet import curl, ternary

# Field offsets in trytes (IRI's TransactionViewModel layout).
SIGNATURE = slice(0, 2187)
ADDRESS = slice(2187, 2268)
VALUE = slice(2268, 2295)
OBSOLETE_TAG = slice(2295, 2322)
TIMESTAMP = slice(2322, 2331)
CURRENT_INDEX = slice(2331, 2340)
LAST_INDEX = slice(2340, 2349)
BUNDLE = slice(2349, 2430)
TRUNK = slice(2430, 2511)
BRANCH = slice(2511, 2592)
TAG = slice(2592, 2619)
ATTACHMENT_TIMESTAMP = slice(2619, 2628)
NONCE = slice(2646, 2673)
ESSENCE = slice(2187, 2349)  # what the bundle hash covers
BAD_TRYTES = "Invalid trytes input: a transaction is 2673 trytes [9A-Z]"
# A value field is 27 trytes but IRI only allows 33 significant trits (the supply).
VALUE_SIGNIFICANT_TRYTES = 11


class InvalidTransactionError(ValueError):
    pass


@dataclass
class Tx:
    """A stored transaction: the raw trytes plus the fields the node indexes."""

    hash: str
    trytes: str
    address: str
    value: int
    obsolete_tag: str
    tag: str
    timestamp: int
    current_index: int
    last_index: int
    bundle: str
    trunk: str
    branch: str
    attachment_timestamp: int
    arrival: int = 0  # order of arrival at this node (set when stored)
    arrival_milestone: int = 0  # latest milestone index when it arrived
    confirmed_at: int | None = None  # milestone index that confirmed it

    @property
    def is_tail(self) -> bool:
        return self.current_index == 0


def parse(trytes: str, tx_hash: str) -> Tx:
    """Fields of a transaction; raises InvalidTransactionError where IRI would reject it."""
    if not ternary.is_trytes(trytes, ternary.TRANSACTION_TRYTES):
        raise InvalidTransactionError(BAD_TRYTES)
    if trytes[VALUE][VALUE_SIGNIFICANT_TRYTES:] != "9" * (27 - VALUE_SIGNIFICANT_TRYTES):
        raise InvalidTransactionError("Invalid transaction value: above the supply")
    tx = Tx(
        hash=tx_hash,
        trytes=trytes,
        address=trytes[ADDRESS],
        value=ternary.to_int(trytes[VALUE]),
        obsolete_tag=trytes[OBSOLETE_TAG],
        tag=trytes[TAG],
        timestamp=ternary.to_int(trytes[TIMESTAMP]),
        current_index=ternary.to_int(trytes[CURRENT_INDEX]),
        last_index=ternary.to_int(trytes[LAST_INDEX]),
        bundle=trytes[BUNDLE],
        trunk=trytes[TRUNK],
        branch=trytes[BRANCH],
        attachment_timestamp=ternary.to_int(trytes[ATTACHMENT_TIMESTAMP]),
    )
    if abs(tx.value) > ternary.SUPPLY:
        raise InvalidTransactionError("Invalid transaction value: above the supply")
    if not 0 <= tx.current_index <= tx.last_index:
        raise InvalidTransactionError("Invalid transaction: current index outside 0..last index")
    # Kerl addresses end in a 0 trit; a value sent elsewhere could never be spent (IRI rule).
    if tx.value != 0 and ternary.to_trits(tx.address[-1])[2] != 1:
        raise InvalidTransactionError("Invalid address: a value transaction needs a Kerl address")
    return tx


def bundle_hash(essences: list[str]) -> str:
    """Kerl hash of the bundle essence (address, value, obsolete tag, timestamp, indexes)."""
    sponge = Kerl()
    for essence in essences:
        sponge.absorb(TryteString(essence).as_trits())
    out = [0] * curl.HASH_TRITS
    sponge.squeeze(out)
    return str(TryteString.from_trits(out))


def attach(
    trytes_head_first: list[str], trunk: str, branch: str, min_weight_magnitude: int
) -> list[tuple[str, str]]:
    """IRI's attachToTangle: chain, timestamp and do the PoW; return (trytes, hash) tail first.

    The input is head (last index) first, as PyOTA sends it. The head approves trunk and
    branch; every other transaction approves the one after it (trunk) and `trunk` (branch),
    so a bundle can be walked from its tail along trunks.
    """
    attached: list[tuple[str, str]] = []
    previous: str | None = None
    for raw in trytes_head_first:
        if not ternary.is_trytes(raw, ternary.TRANSACTION_TRYTES):
            raise InvalidTransactionError(BAD_TRYTES)
        tag = raw[TAG]
        if tag == "9" * ternary.TAG_TRYTES:  # IRI copies the obsolete tag into an empty tag
            tag = raw[OBSOLETE_TAG]
        now_ms = int(time.time() * 1000)
        body = (
            raw[: TRUNK.start]
            + (previous if previous is not None else trunk)
            + (trunk if previous is not None else branch)
            + tag
            + ternary.from_int(now_ms, 9)
            + ternary.from_int(0, 9)
            + ternary.from_int(ternary.MAX_TIMESTAMP_VALUE, 9)
            + "9" * curl.NONCE_TRYTES
        )
        with_nonce, tx_hash = curl.do_pow(body, min_weight_magnitude)
        attached.append((with_nonce, tx_hash))
        previous = tx_hash
    attached.reverse()
    return attached
