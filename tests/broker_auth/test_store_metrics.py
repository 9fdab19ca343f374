"""Time in the store by command and collection: what tells which collection saturates FerretDB."""

from __future__ import annotations

import secrets

import pytest
from pymongo.errors import DuplicateKeyError, ServerSelectionTimeoutError

from broker_auth.infra.db import Store
from broker_auth.infra.metrics import DepositAddressGauge
from tests.conftest import Mongo
from tests.store_commands import store_commands


def test_each_command_is_timed_under_its_collection(ferret: Mongo) -> None:
    store = Store(ferret.url, f"metrics_{secrets.token_hex(4)}")
    try:
        finds, inserts = store_commands("find", "orders"), store_commands("insert", "payments")
        store.payments.insert_one({"_id": "p1"})
        for _ in range(3):
            store.orders.find_one({"username": "nobody"})
        more = store_commands("getMore", "payments")
        store.payments.insert_one({"_id": "p2"})
        assert len(list(store.payments.find({}).batch_size(1))) == 2
        assert store_commands("getMore", "payments") > more, "a getMore counts under its collection"
        assert store_commands("insert", "payments") == inserts + 2
        assert store_commands("find", "orders") == finds + 3
    finally:
        store.client.drop_database(store.db.name)
        store.close()


def test_a_failed_command_is_timed_too(ferret: Mongo) -> None:
    store = Store(ferret.url, f"metrics_{secrets.token_hex(4)}")
    try:
        before = store_commands("insert", "payments")
        store.payments.insert_one({"_id": "same"})
        with pytest.raises(DuplicateKeyError):  # still a round trip to the store
            store.payments.insert_one({"_id": "same"})
        assert store_commands("insert", "payments") == before + 2
    finally:
        store.client.drop_database(store.db.name)
        store.close()


def test_the_pool_gauge_keeps_the_last_counts_while_the_store_is_down() -> None:
    """Else DepositPoolEmpty would resolve during a store outage, and start over after it."""
    gauge = DepositAddressGauge()
    answers: list[dict[str, int] | Exception] = [
        {"free": 0, "assigned": 7},
        ServerSelectionTimeoutError("down"),
    ]

    def source() -> dict[str, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    gauge.source = source
    for _ in range(2):
        (family,) = list(gauge.collect())
        assert {s.labels["state"]: s.value for s in family.samples} == {"free": 0, "assigned": 7}
