"""The fast Curl and trit conversions give exactly PyOTA's results (pure functions, no node)."""

from __future__ import annotations

import random

from iota import Transaction, TryteString

from devnet import curl, speedups, ternary

speedups.install()
rng = random.Random(1234)


def random_trytes(n: int) -> str:
    return "".join(rng.choice(ternary.ALPHABET) for _ in range(n))


def test_curl_matches_pyota() -> None:
    original = speedups.ORIGINALS["curl_transform"]
    for _ in range(3):
        state = [rng.choice((-1, 0, 1)) for _ in range(729)]
        sponge = type("S", (), {"_state": list(state)})()
        original(sponge)
        assert [t - 1 for t in curl.transform(bytes(t + 1 for t in state))] == sponge._state


def test_transaction_hash_and_pow() -> None:
    trytes = random_trytes(ternary.TRANSACTION_TRYTES)
    assert curl.hash_trytes(trytes) == str(Transaction.from_tryte_string(trytes).hash)
    attached, tx_hash = curl.do_pow(trytes, 4)
    assert attached[:-27] == trytes[:-27]
    assert tx_hash == curl.hash_trytes(attached)
    assert ternary.trailing_zero_trits(tx_hash) >= 4


def test_kerl_conversions_match_pyota() -> None:
    to_bytes = speedups.ORIGINALS["convertToBytes"]
    to_trits = speedups.ORIGINALS["convertToTrits"]
    for _ in range(200):
        trits = [rng.choice((-1, 0, 1)) for _ in range(243)]
        assert speedups.convert_to_bytes(trits) == to_bytes(list(trits))
        trits[242] = 0  # as Kerl absorbs them
        assert speedups.convert_to_bytes(trits) == to_bytes(list(trits))
        signed = [rng.randint(-128, 127) for _ in range(48)]
        assert speedups.convert_to_trits(signed) == to_trits(list(signed))
    for edge in ([-128] + [0] * 47, [127] + [-1] * 47, [0] * 48, [-1] * 48):
        assert speedups.convert_to_trits(edge) == to_trits(list(edge))


def test_as_trits_and_ints_match_pyota() -> None:
    text = TryteString(random_trytes(300).encode())
    assert text.as_trits() == speedups.ORIGINALS["as_trits"](text)
    for value in (0, 1, -1, 13, -13, 14, 3**26, -(3**26), ternary.SUPPLY, -ternary.SUPPLY):
        trytes = ternary.from_int(value, 27)
        assert ternary.to_int(trytes) == value
        assert ternary.to_trits(trytes) == bytes(t + 1 for t in TryteString(trytes).as_trits())
