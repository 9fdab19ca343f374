"""Provisional access's entries on real FerretDB and Mosquitto: what runs stays apart from what
ended (every instant-access review reads the running ones whole), an ended bundle never opens
access again, and a crash or a second process between two writes neither loses nor doubles.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Iterator

import pytest

from broker_auth.access.instant_access import Admitted
from broker_auth.access.provisional import Opening, ProvisionalGrants
from broker_auth.broker.projector import Projector
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from tests.broker_auth.test_crediting import Parts, running_parts
from tests.conftest import Mongo, MosquittoFactory


@pytest.fixture(scope="module")
def parts(mosquitto_factory: MosquittoFactory, ferret: Mongo) -> Iterator[Parts]:
    with running_parts(mosquitto_factory, ferret, "provisional") as parts:
        yield parts


def opening(username: str, seconds: float = 120) -> Opening:
    bundle = secrets.token_hex(16).upper()
    admitted = Admitted(
        bundle_hash=bundle,
        order_id=secrets.token_hex(8),
        buyer=username,
        value=60,
        seconds=seconds,
        until=utcnow() + dt.timedelta(seconds=seconds),
    )
    return Opening(admitted, "ADDRESS9", "crd", "live/crd/#", frozenset({"INPUT9"}), utcnow())


def provisional(parts: Parts, told: list[str] | None = None) -> ProvisionalGrants:
    """A process's provisional grants (its own projector and leader: its own lock)."""
    projector = Projector(parts.store, parts.dynsec)
    notify = (lambda user, event, product, end: told.append(event)) if told is not None else None
    return ProvisionalGrants(parts.store, projector, notify=notify)


def entry(store: Store, bundle: str) -> Doc:
    doc = store.provisional.find_one({"_id": bundle})
    assert doc is not None
    return doc


def test_an_ended_entry_leaves_the_running_ones_and_never_opens_access_again(
    parts: Parts,
) -> None:
    grants = provisional(parts)
    username = parts.buyer()
    first = opening(username)
    bundle = first.admitted.bundle_hash
    assert grants.open(first, username)
    running = entry(parts.store, bundle)
    end_before = as_utc(parts.grant(username)["expires_at"])

    grants.converted([running], first.admitted.order_id)

    assert parts.store.provisional.find_one({"_id": bundle}) is None
    ended = parts.store.provisional_ended.find_one({"_id": bundle})
    assert ended is not None and ended["state"] == "converted"
    assert grants.first_seen(bundle) == as_utc(running["first_seen"])
    # The same bundle seen pending again (a replay, a reattachment): no second opening.
    later = Opening(
        Admitted(
            bundle, first.admitted.order_id, username, 60, 600, utcnow() + dt.timedelta(seconds=600)
        ),
        *(first.address, first.product_id, first.topic_filter, first.inputs, first.first_seen),
    )
    assert not grants.open(later, username)
    assert parts.store.provisional.find_one({"_id": bundle}) is None
    assert as_utc(parts.grant(username)["expires_at"]) == end_before


def test_an_ending_cut_short_by_a_crash_is_finished_at_repair(parts: Parts) -> None:
    grants = provisional(parts)
    username = parts.buyer()
    cut, legacy = opening(username), opening(username)
    for one in (cut, legacy):
        assert grants.open(one, username)
    # The crash: the entry was copied to the ended ones, not yet taken out of the running.
    doc = entry(parts.store, cut.admitted.bundle_hash)
    parts.store.provisional_ended.insert_one({**doc, "state": "withdrawn", "why": "test"})
    # Kept by a version from before `provisional_ended`: ended, among the running ones.
    parts.store.provisional.update_one(
        {"_id": legacy.admitted.bundle_hash}, {"$set": {"state": "converted"}}
    )
    assert not grants.open(cut, username)

    grants.repair()

    ids = [cut.admitted.bundle_hash, legacy.admitted.bundle_hash]
    assert parts.store.provisional.count_documents({"_id": {"$in": ids}}) == 0
    for one, state in ((cut, "withdrawn"), (legacy, "converted")):
        ended = parts.store.provisional_ended.find_one({"_id": one.admitted.bundle_hash})
        assert ended is not None and ended["state"] == state
    assert grants.until_for_grant(username, "crd", utcnow()) is None
    assert "provisional_until" not in parts.grant(username)


def test_a_conversion_and_a_withdrawal_racing_from_two_processes_end_an_entry_once(
    parts: Parts,
) -> None:
    """The old leader credits the payment while the new one withdraws the bundle: each entry
    ends one way, once, and the buyer is told of a withdrawal only when it won."""
    told: list[str] = []
    crediting, reviewing = provisional(parts), provisional(parts, told)
    username = parts.buyer()
    bundles = []
    for _ in range(8):
        one = opening(username)
        assert crediting.open(one, username)
        bundles.append(entry(parts.store, one.admitted.bundle_hash))

    for doc in bundles:
        go = threading.Barrier(2)

        def convert(doc: Doc = doc, go: threading.Barrier = go) -> None:
            go.wait()
            crediting.converted([doc], str(doc["order_id"]))

        def withdraw(doc: Doc = doc, go: threading.Barrier = go) -> None:
            go.wait()
            reviewing.withdraw(doc, "double spend (contested)")

        threads = [threading.Thread(target=convert), threading.Thread(target=withdraw)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)

    ids = [str(d["_id"]) for d in bundles]
    assert parts.store.provisional.count_documents({"_id": {"$in": ids}}) == 0
    states = [str(d["state"]) for d in parts.store.provisional_ended.find({"_id": {"$in": ids}})]
    assert len(states) == len(ids)
    assert told.count("grant_withdrawn") == states.count("withdrawn")


def test_a_withdrawal_cut_short_by_an_error_is_finished_when_withdrawn_again(
    parts: Parts,
) -> None:
    """The withdrawal's move landed, then the store failed before the rest: the next review
    withdraws the bundle again, and the payer is blocked and the grant shortened then."""
    told: list[str] = []
    grants = provisional(parts, told)
    username = parts.buyer()
    one = opening(username)
    assert grants.open(one, username)
    doc = entry(parts.store, one.admitted.bundle_hash)
    parts.store.provisional_ended.insert_one({**doc, "state": "withdrawn", "why": "double spend"})

    grants.withdraw(doc, "double spend (contested)", block=True)

    assert grants.blocked(username, [], utcnow())
    assert "provisional_until" not in parts.grant(username)
    assert told == ["grant_provisional", "grant_withdrawn"]
    assert parts.store.provisional.find_one({"_id": one.admitted.bundle_hash}) is None
