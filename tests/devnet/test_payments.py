"""Payments with PyOTA 2.1.0 through a real devnet node: confirmation, ledger, validation."""

from __future__ import annotations

import time

import pytest
from iota import (
    Address,
    Bundle,
    Iota,
    ProposedTransaction,
    Tag,
    Transaction,
    TransactionHash,
    TryteString,
)
from iota.adapter import BadApiResponse
from iota.crypto.addresses import AddressGenerator
from iota.crypto.types import Seed

from tests.devnet.conftest import Devnet

TAG = "DEVNET9TEST9ORDER"
MWM = 1


def generated(seed: Seed, index: int = 0) -> Address:
    """Address of `seed` at `index`, with key index and security level set (usable as input)."""
    address: Address = AddressGenerator(seed, 2).get_addresses(index, 1)[0]
    return address


def receiver() -> Address:
    return generated(Seed.random())


def funded(devnet: Devnet, value: int) -> tuple[Iota, Seed, Address]:
    seed = Seed.random()
    address = generated(seed)
    r = devnet.faucet(str(address), value)
    assert r.status_code == 200, r.text
    assert r.json()["balance"] == value
    return Iota(devnet.url, seed), seed, address


def tail_hash(trytes: list[TryteString]) -> TransactionHash:
    bundle = Bundle.from_tryte_strings(trytes)
    return bundle.tail_transaction.hash


def latest(api: Iota, *hashes: TransactionHash) -> list[bool]:
    states = api.get_latest_inclusion(list(hashes))["states"]
    return [bool(states[h]) for h in hashes]


def milestone_now(devnet: Devnet) -> None:
    """On a manual node the faucet issues a milestone at once: use it as the coordinator."""
    assert devnet.faucet(str(receiver()), 1).status_code == 200


def test_faucet_then_send_transfer_confirms_and_moves_balances(devnet: Devnet) -> None:
    api, seed, a0 = funded(devnet, 1000)
    # The faucet left a real transaction at a0, so PyOTA's address scans see it as used.
    inputs = api.get_inputs()
    assert inputs["totalBalance"] == 1000 and inputs["inputs"] == [a0]
    # count=None makes PyOTA scan the tangle for the first unused address (the change address).
    assert api.get_new_addresses(count=None)["addresses"][0] == generated(seed, 1)

    to = receiver()
    started = time.monotonic()
    bundle = api.send_transfer(
        transfers=[ProposedTransaction(address=to, value=300, tag=Tag(TAG))],
        depth=3,
        min_weight_magnitude=MWM,
    )["bundle"]
    send_s = time.monotonic() - started
    tail = bundle.tail_transaction.hash
    started = time.monotonic()
    while not latest(api, tail)[0]:
        assert time.monotonic() - started < 5, "not confirmed within 5 s"
        time.sleep(0.05)
    confirm_s = time.monotonic() - started
    print(f"send_transfer {send_s:.2f} s, confirmed {confirm_s:.2f} s later")

    change = [tx.address for tx in bundle if tx.value == 700]
    assert change == [generated(seed, 1)]  # PyOTA's change went to the seed's next address
    balances = api.get_balances([a0, change[0], to])["balances"]
    assert balances == [0, 700, 300]
    assert api.get_inputs()["totalBalance"] == 700
    assert api.were_addresses_spent_from([a0, change[0]])["states"] == [True, False]

    output = next(tx for tx in bundle if tx.address == to)
    found = api.find_transactions(addresses=[to], tags=[Tag(TAG)])["hashes"]
    assert found == [output.hash]
    assert api.find_transactions(addresses=[to], tags=[Tag("OTHER")])["hashes"] == []
    assert set(api.find_transactions(bundles=[bundle.hash])["hashes"]) == {t.hash for t in bundle}

    [again] = api.get_bundles(tail)["bundles"]
    assert again.hash == bundle.hash and len(again) == len(bundle) == 4
    transfers = api.get_transfers(inclusion_states=True)["bundles"]
    assert [b.hash for b in transfers][-1] == bundle.hash
    assert all(b.is_confirmed for b in transfers)


def test_inclusion_false_before_and_true_after_milestone(manual_devnet: Devnet) -> None:
    api, _, _ = funded(manual_devnet, 100)
    tail = api.send_transfer(
        transfers=[ProposedTransaction(address=receiver(), value=60, tag=Tag(TAG))],
        depth=3,
        min_weight_magnitude=MWM,
    )["bundle"].tail_transaction.hash
    before = manual_devnet.ok("getNodeInfo")["latestMilestone"]
    assert latest(api, tail) == [False]
    assert api.get_inclusion_states([tail], [TransactionHash(before)])["states"] == [False]
    assert manual_devnet.ok("checkConsistency", tails=[str(tail)])["state"] is True

    milestone_now(manual_devnet)
    after = manual_devnet.ok("getNodeInfo")["latestMilestone"]
    assert latest(api, tail) == [True]
    assert api.get_inclusion_states([tail], [TransactionHash(after)])["states"] == [True]
    # Relative to the older milestone it was not included yet: as IRI answers for old tips.
    assert api.get_inclusion_states([tail], [TransactionHash(before)])["states"] == [False]


def test_double_spend_confirms_only_one(manual_devnet: Devnet) -> None:
    api, seed, a0 = funded(manual_devnet, 500)
    first, second = receiver(), receiver()
    tails = []
    for to in (first, second):  # both spend all of a0's 500
        trytes = api.prepare_transfer(
            transfers=[ProposedTransaction(address=to, value=500, tag=Tag(TAG))],
            inputs=[generated(seed)],
        )["trytes"]
        tails.append(
            tail_hash(api.send_trytes(trytes, depth=3, min_weight_magnitude=MWM)["trytes"])
        )
    check = manual_devnet.ok
    assert check("checkConsistency", tails=[str(tails[0])])["state"] is True
    assert check("checkConsistency", tails=[str(tails[1])])["state"] is True
    together = check("checkConsistency", tails=[str(t) for t in tails])
    assert together["state"] is False and "overdraw" in together["info"]

    milestone_now(manual_devnet)
    milestone_now(manual_devnet)
    assert latest(api, *tails) == [True, False]  # the first to arrive wins
    assert api.get_balances([a0, first, second])["balances"] == [0, 500, 0]
    answer = check("checkConsistency", tails=[str(tails[1])])
    assert answer["state"] is False and "conflicting" in answer["info"]


def test_replayed_bundle_is_credited_once(manual_devnet: Devnet) -> None:
    api, _, _ = funded(manual_devnet, 300)
    to = receiver()
    bundle = api.send_transfer(
        transfers=[ProposedTransaction(address=to, value=200, tag=Tag(TAG))],
        depth=3,
        min_weight_magnitude=MWM,
    )["bundle"]
    tail = bundle.tail_transaction.hash
    replayed = Bundle.from_tryte_strings(
        api.replay_bundle(tail, depth=3, min_weight_magnitude=MWM)["trytes"]
    )
    assert replayed.hash == bundle.hash
    assert not {t.hash for t in replayed} & {t.hash for t in bundle}
    assert len(api.find_transactions(bundles=[bundle.hash])["hashes"]) == 8

    milestone_now(manual_devnet)
    replay_tail = replayed.tail_transaction.hash
    assert latest(api, tail, replay_tail) == [True, False]
    assert api.get_balances([to])["balances"] == [200]

    # Reattaching after confirmation changes nothing either.
    late = tail_hash(api.replay_bundle(tail, depth=3, min_weight_magnitude=MWM)["trytes"])
    milestone_now(manual_devnet)
    assert latest(api, tail, replay_tail, late) == [True, False, False]
    assert api.get_balances([to])["balances"] == [200]
    # PyOTA's get_bundles walks one attachment and still validates it.
    assert api.get_bundles(late)["bundles"][0].hash == bundle.hash


def tamper(trytes: TryteString, offset: int) -> TryteString:
    text = str(trytes)
    swapped = "A" if text[offset] != "A" else "B"
    return TryteString((text[:offset] + swapped + text[offset + 1 :]).encode())


@pytest.mark.parametrize(
    ("what", "offset", "error"),
    [
        ("signature", 100, "invalid signature"),
        ("output value", 2268 + 5, "bundle hash"),
        ("output address", 2187 + 3, "bundle hash"),
    ],
)
def test_tampered_bundle_is_rejected(devnet: Devnet, what: str, offset: int, error: str) -> None:
    api, seed, _ = funded(devnet, 50)
    to = receiver()
    prepared = api.prepare_transfer(
        transfers=[ProposedTransaction(address=to, value=50, tag=Tag(TAG))],
        inputs=[generated(seed)],
    )["trytes"]  # head first: [input part 2, input part 1, output]
    index = 1 if what == "signature" else 2
    bad = list(prepared)
    bad[index] = tamper(bad[index], offset)
    gtta = api.get_transactions_to_approve(depth=3)
    attached = api.attach_to_tangle(gtta["trunkTransaction"], gtta["branchTransaction"], bad, MWM)[
        "trytes"
    ]
    with pytest.raises(BadApiResponse, match=f"(?i){error}"):
        api.store_transactions(attached)
    with pytest.raises(BadApiResponse, match=f"(?i){error}"):
        api.broadcast_transactions(attached)
    bundle_hash = Transaction.from_tryte_string(attached[0]).bundle_hash
    assert api.find_transactions(bundles=[bundle_hash])["hashes"] == []

    # Stored piecewise, the request that completes the bundle is the one refused.
    api.store_transactions(attached[:1])
    with pytest.raises(BadApiResponse, match=f"(?i){error}"):
        api.store_transactions(attached[1:])
    assert len(api.find_transactions(bundles=[bundle_hash])["hashes"]) == 1

    # The untampered bundle goes through.
    api.send_trytes(prepared, depth=3, min_weight_magnitude=MWM)
