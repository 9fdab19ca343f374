"""The payments lease on a real FerretDB: one holder, fencing before take-over, release, races."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from broker_auth.infra.db import Store
from broker_auth.infra.leader import STANDBY_MAX_PAUSE_S, PaymentsLease
from tests.conftest import Mongo
from tests.store_commands import store_commands


@pytest.fixture
def store(ferret: Mongo) -> Iterator[Store]:
    s = Store(ferret.url, f"lease_{secrets.token_hex(4)}")
    yield s
    s.close()


def test_one_holder_and_fencing_before_take_over(store: Store) -> None:
    a = PaymentsLease(store, ttl_s=1.0, safety_s=0.3, holder="a")
    b = PaymentsLease(store, ttl_s=1.0, safety_s=0.3, holder="b")
    assert a.try_once() and a.held()
    assert not b.try_once() and not b.held()
    # a stops renewing (paused, cut off): it stops counting itself leader before b may take over.
    while a.held():
        assert not b.try_once()
        time.sleep(0.02)
    while not b.try_once():
        assert not a.held()
        time.sleep(0.02)
    assert b.held() and not a.held()
    assert not a.try_once(), "a must not renew a lease b took"
    assert b.epoch == 2 and a.epoch == 0


def test_release_hands_over_at_once(store: Store) -> None:
    a = PaymentsLease(store, ttl_s=30.0, holder="a")
    b = PaymentsLease(store, ttl_s=30.0, holder="b")
    assert a.try_once()
    assert not b.try_once()
    a.release()
    assert not a.held()
    assert b.try_once()


def test_racing_takers_get_one_lease(store: Store) -> None:
    leases = [PaymentsLease(store, ttl_s=30.0, holder=f"r{i}") for i in range(8)]
    for _round in range(3):
        with ThreadPoolExecutor(8) as pool:
            won = list(pool.map(lambda lease: lease.try_once(), leases))
        assert sum(won) == 1, won
        next(lease for lease, w in zip(leases, won, strict=True) if w).release()


def test_a_standby_looks_again_when_the_lease_it_saw_expires_with_two_reads(store: Store) -> None:
    """Looking every 0.1 s cost each standby 30 reads a second: half of what a saturated FerretDB
    served in the chaos soak. A standby now looks when the lease it saw expires (at most 1 s
    later: a released lease is taken within it), with two `_id` reads once it knows the epoch."""
    holder = PaymentsLease(store, ttl_s=0.6, safety_s=0.1, holder="a")
    standby = PaymentsLease(store, ttl_s=0.6, safety_s=0.1, holder="b")
    assert standby.standby_pause(0.1) == 0.1, "nothing seen yet: look soon"
    assert holder.try_once()
    assert not standby.try_once()
    pause = standby.standby_pause(0.1)
    assert 0.3 < pause <= 0.6, "until the lease it saw expires"
    before = store_commands("find", "leases")
    assert not standby.try_once()
    reads = store_commands("find", "leases") - before
    assert reads == 2, "the epoch it knows and the next one: no hint read"
    long_holder = PaymentsLease(store, ttl_s=30.0, holder="c")
    time.sleep(0.7)  # the holder stopped renewing: expired
    assert long_holder.try_once() and not standby.try_once()
    assert standby.standby_pause(0.1) == STANDBY_MAX_PAUSE_S, "at most 1 s between looks"
    long_holder.release()
    assert standby.try_once(), "a released lease is taken at the next look"


def delayed(col: Any, command: str, until: Callable[[], None]) -> Any:
    """The lease collection as one replica sees it, `command` held until `until` returns."""
    return Delayed(col, command, until)


class Delayed:
    def __init__(self, col: Any, command: str, until: Callable[[], None]) -> None:
        self._col, self._command, self._until = col, command, until

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._col, name)
        if name != self._command:
            return real

        def held(*args: Any, **kwargs: Any) -> Any:
            self._until()
            return real(*args, **kwargs)

        return held


def test_a_renewal_landing_after_a_standby_read_the_lease_expired_is_given_up(
    ferret: Mongo,
) -> None:
    """The store is slow: the holder's renewal lands after a standby read the lease expired,
    and the standby's take-over lands after the holder looked for one. Two leaders, unless the
    holder counts its renewal only when the answer came back inside its fence."""
    name = f"lease_{secrets.token_hex(4)}"
    stores = [Store(ferret.url, name) for _ in "ab"]
    standby_read_expired, holder_done = threading.Event(), threading.Event()

    def after_standby_read() -> None:
        assert standby_read_expired.wait(10)

    def take_over_after_holder() -> None:
        standby_read_expired.set()
        assert holder_done.wait(10)

    a = PaymentsLease(stores[0], ttl_s=1.0, safety_s=0.3, holder="a")
    b = PaymentsLease(stores[1], ttl_s=1.0, safety_s=0.3, holder="b")
    try:
        assert a.try_once()
        stores[0].leases = delayed(stores[0].leases, "update_one", after_standby_read)
        stores[1].leases = delayed(stores[1].leases, "insert_one", take_over_after_holder)
        renewed: list[bool] = []

        def renew() -> None:
            renewed.append(a.try_once())  # sent inside the fence, answered after it
            holder_done.set()

        holder = threading.Thread(target=renew)
        holder.start()
        while not b.try_once():
            time.sleep(0.02)
        holder.join(10)
        assert b.held()
        assert renewed == [False] and not a.held(), "two replicas lead at once"
    finally:
        for s in stores:
            s.close()
