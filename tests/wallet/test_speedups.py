"""broker_auth.ledger.speedups gives exactly PyOTA's results: properties over many random
inputs, no node.

Measured on this machine (README): one address 0.23 s with PyOTA alone, 0.06 s with the
speed-ups, so `iot-wallet addresses --count 1000` takes about a minute instead of four.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st
from iota import Transaction, TransactionHash, TryteString
from iota.crypto.addresses import AddressGenerator
from iota.crypto.types import Seed

from broker_auth.ledger import curl, speedups, ternary

speedups.install()

trit = st.sampled_from((-1, 0, 1))
trytes = st.text(alphabet=ternary.ALPHABET, min_size=0, max_size=300)


@settings(max_examples=60, deadline=None)
@given(st.lists(trit, min_size=729, max_size=729))
def test_curl_transform_matches_pyota(state: list[int]) -> None:
    sponge = type("Sponge", (), {"_state": list(state)})()
    speedups.ORIGINALS["curl_transform"](sponge)
    assert [t - 1 for t in curl.transform(bytes(t + 1 for t in state))] == sponge._state


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet=ternary.ALPHABET, min_size=2673, max_size=2673))
def test_transaction_hash_matches_pyota(tx: str) -> None:
    assert curl.hash_trytes(tx) == str(Transaction.from_tryte_string(tx).hash)


@settings(max_examples=1000, deadline=None)
@given(st.lists(trit, min_size=243, max_size=243))
def test_trits_to_bytes_matches_pyota(trits: list[int]) -> None:
    original = speedups.ORIGINALS["convertToBytes"]
    assert speedups.convert_to_bytes(list(trits)) == original(list(trits))
    trits[242] = 0  # as Kerl absorbs them
    assert speedups.convert_to_bytes(list(trits)) == original(list(trits))


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.integers(-128, 127), min_size=48, max_size=48))
def test_bytes_to_trits_matches_pyota(signed: list[int]) -> None:
    assert speedups.convert_to_trits(list(signed)) == speedups.ORIGINALS["convertToTrits"](
        list(signed)
    )


@settings(max_examples=500, deadline=None)
@given(trytes)
def test_as_trits_matches_pyota(text: str) -> None:
    value = TryteString(text.encode())
    assert value.as_trits() == speedups.ORIGINALS["as_trits"](value)


@settings(max_examples=500, deadline=None)
@given(st.lists(trit, min_size=0, max_size=400), st.sampled_from((None, 0, 50, 200)))
def test_from_trits_matches_pyota(trits: list[int], pad: int | None) -> None:
    original = speedups.ORIGINALS["from_trits"].__func__
    for cls in (TryteString, TransactionHash):
        if cls is TransactionHash and len(trits) > 243:
            continue
        fast = cls.from_trits(list(trits), pad) if cls is TryteString else cls.from_trits(trits)
        slow = original(cls, list(trits), pad) if cls is TryteString else original(cls, trits)
        assert type(fast) is type(slow) and str(fast) == str(slow)


@settings(max_examples=500, deadline=None)
@given(st.integers(-ternary.SUPPLY, ternary.SUPPLY))
def test_ternary_ints_round_trip_like_pyota(value: int) -> None:
    text = ternary.from_int(value, 27)
    assert ternary.to_int(text) == value
    assert ternary.to_trits(text) == bytes(t + 1 for t in TryteString(text.encode()).as_trits())


@contextlib.contextmanager
def plain_pyota() -> Iterator[None]:
    """PyOTA's own conversions, for the duration of the block."""
    from iota.crypto.kerl import conv

    fast_from_trits = TryteString.__dict__["from_trits"]  # the classmethod, not one bound to it
    fast = (conv.convertToBytes, conv.convertToTrits, TryteString.as_trits, fast_from_trits)
    conv.convertToBytes = speedups.ORIGINALS["convertToBytes"]
    conv.convertToTrits = speedups.ORIGINALS["convertToTrits"]
    TryteString.as_trits = speedups.ORIGINALS["as_trits"]
    TryteString.from_trits = speedups.ORIGINALS["from_trits"]
    try:
        yield
    finally:
        (conv.convertToBytes, conv.convertToTrits, TryteString.as_trits, TryteString.from_trits) = (
            fast
        )


@settings(max_examples=5, deadline=None)
@given(st.text(alphabet=ternary.ALPHABET, min_size=81, max_size=81), st.integers(0, 50))
def test_addresses_match_pyota_without_speedups(seed: str, index: int) -> None:
    fast = AddressGenerator(Seed(seed.encode()), 2).get_addresses(index, 1)[0]
    with plain_pyota():
        slow = AddressGenerator(Seed(seed.encode()), 2).get_addresses(index, 1)[0]
    assert str(fast) == str(slow)
