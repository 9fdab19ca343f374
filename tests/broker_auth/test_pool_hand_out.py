"""Handing out deposit addresses from each replica's copy of the free queue's head, against
real FerretDB and Hornet (the node says the addresses were never spent from, and what they
hold): two `DepositAddresses` on one store stand for two broker_auth replicas."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Iterator

import pytest
from pymongo.errors import DuplicateKeyError

from broker_auth.billing.pool import AddressTakenError, DepositAddresses, PoolEmptyError
from broker_auth.infra.clock import utcnow
from broker_auth.infra.db import Store
from broker_auth.ledger.iri import IriLedger
from testing import procs
from testing.addresses import random_address
from tests.conftest import Mongo


@pytest.fixture
def store(ferret: Mongo) -> Iterator[Store]:
    s = Store(ferret.url, f"handout_{secrets.token_hex(4)}")
    s.ensure_indexes()
    yield s
    s.client.drop_database(s.db.name)
    s.close()


def replicas(store: Store, devnet: procs.Devnet, n: int = 2) -> list[DepositAddresses]:
    return [DepositAddresses(store, IriLedger(devnet.url), low_water=0) for _ in range(n)]


def take(pool: DepositAddresses) -> tuple[str, str]:
    """One order takes an address, as orders.py does: (address, order id)."""
    order_id = secrets.token_hex(8)
    now = utcnow()
    until = now + dt.timedelta(hours=1)

    def insert_order(address: str, accounted: int) -> None:
        order = {"_id": order_id, "address": address, "tag": order_id, "created_at": now}
        try:
            pool.store.orders.insert_one({**order, "watch_until": until, "expires_at": until})
        except DuplicateKeyError as exc:
            raise AddressTakenError(address) from exc

    return pool.take(insert_order, order_id, until, until), order_id


def test_an_address_let_go_queues_behind_the_others_in_every_replica(
    store: Store, devnet: procs.Devnet
) -> None:
    """The other replica's copy of the head still lists it first: it must skip it, or the
    next buyer gets the address the last one may still be paying to."""
    a, b = replicas(store, devnet)
    x = [random_address() for _ in range(4)]
    assert a.load(x).added == 4
    assert take(b)[0] == x[0]  # b's copy: x1, x2, x3
    taken, order_id = take(a)
    assert taken == x[1]
    assert a.release(x[1], order_id)  # cancelled at once: x2 goes to the back of the queue
    assert [take(b)[0] for _ in range(3)] == [x[2], x[3], x[1]]
    with pytest.raises(PoolEmptyError):
        take(a)


def test_concurrent_hand_outs_from_two_replicas_give_each_address_once(
    store: Store, devnet: procs.Devnet
) -> None:
    pools = replicas(store, devnet)
    x = [random_address() for _ in range(24)]
    assert pools[0].load(x).added == 24
    got: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def buyer(pool: DepositAddresses) -> None:
        try:
            address, _ = take(pool)
            with lock:
                got.append(address)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=buyer, args=(pools[i % 2],)) for i in range(28)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(got) == sorted(x), f"each address handed out once, none left: {errors}"
    assert len(errors) == 4 and all(isinstance(e, PoolEmptyError) for e in errors), errors
    assert {d["state"] for d in store.deposit_addresses.find({})} == {"assigned"}
    assert pools[0].counts()["assigned"] == 24
