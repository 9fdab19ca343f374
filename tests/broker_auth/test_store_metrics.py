"""Time in the store by command and collection: what tells which collection saturates FerretDB."""

from __future__ import annotations

import secrets

import pytest
from prometheus_client import REGISTRY
from pymongo.errors import DuplicateKeyError

from broker_auth.infra.db import Store
from tests.conftest import Mongo


def _count(command: str, collection: str) -> float:
    value = REGISTRY.get_sample_value(
        "broker_auth_store_command_seconds_count",
        {"command": command, "collection": collection},
    )
    return value or 0.0


def test_each_command_is_timed_under_its_collection(ferret: Mongo) -> None:
    store = Store(ferret.url, f"metrics_{secrets.token_hex(4)}")
    try:
        finds, inserts = _count("find", "orders"), _count("insert", "payments")
        store.payments.insert_one({"_id": "p1"})
        for _ in range(3):
            store.orders.find_one({"username": "nobody"})
        list(store.payments.find({}).batch_size(1))  # a getMore is counted as its collection
        assert _count("insert", "payments") == inserts + 1
        assert _count("find", "orders") == finds + 3
        assert _count("find", "payments") >= 1
    finally:
        store.client.drop_database(store.db.name)
        store.close()


def test_a_failed_command_is_timed_too(ferret: Mongo) -> None:
    store = Store(ferret.url, f"metrics_{secrets.token_hex(4)}")
    try:
        before = _count("insert", "payments")
        store.payments.insert_one({"_id": "same"})
        with pytest.raises(DuplicateKeyError):  # still a round trip to the store
            store.payments.insert_one({"_id": "same"})
        assert _count("insert", "payments") == before + 2
    finally:
        store.client.drop_database(store.db.name)
        store.close()
