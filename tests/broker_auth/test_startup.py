"""broker_auth may start before Mosquitto (as under supervisord): it serves, reports the broker
down, and seeds and reconciles as soon as the broker comes up. It waits for a store that does
not answer (a restart under load) instead of exiting, and exits on one that says no."""

from __future__ import annotations

import secrets
import signal
import threading
import time

import pytest
from pymongo.errors import OperationFailure

from broker_auth.infra.db import Store
from testing import procs
from testing.broker_auth import AuthStack, start_auth_stack
from testing.procs import wait_for
from tests.conftest import Mongo, MosquittoFactory

# Longer than the start-up deadline broker_auth had (60 s), after which it exited.
STORE_SILENT_S = 70.0


def test_starts_before_the_broker(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    ferret: Mongo,
) -> None:
    workdir = tmp_path_factory.mktemp("startup")
    broker = mosquitto_factory(f"{workdir.name}-mosquitto")
    broker.proc.stop()
    password = secrets.token_urlsafe(16)
    stack = start_auth_stack(
        workdir,
        broker,
        ferret.url,
        extra_env={"SEED_DEMO": "true", "DEMO_DEVICE_PASSWORD": password},
        wait_for_broker=False,
    )
    try:
        assert (stack.health() or {}).get("broker") == "down"
        broker.proc.start()
        wait_for(lambda: (stack.health() or {}).get("broker") == "ok", 20, "the broker")

        # The demo seed ran once the broker was there: its device may connect.
        def device_connects() -> bool:
            probe = stack.probe("device.plug-1", password)
            ok = probe.connect()
            if ok:
                probe.close()
            return ok

        wait_for(device_connects, 10, "the seeded device", 0.3)
        products = stack.http().get("/api/products").json()
        assert [p["id"] for p in products] == ["plug-1-live"]
    finally:
        stack.close()
        broker.proc.stop()


def test_waits_out_a_store_that_does_not_answer_instead_of_exiting(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_factory: MosquittoFactory
) -> None:
    """A replica restarted while the store is saturated must wait for it: in the chaos soak
    one failed 13 starts in 10 minutes (each start's migrations timed out and it exited), and
    under supervisord a crash loop ends in FATAL. FerretDB is SIGSTOPped here: it accepts
    connections and answers nothing, for longer than the old 60 s start-up deadline."""
    workdir = tmp_path_factory.mktemp("slow-store")
    ferret_proc, port = procs.ferretdb(workdir / "ferretdb")
    broker = mosquitto_factory(f"{workdir.name}-mosquitto")
    started: list[AuthStack] = []
    failed: list[BaseException] = []

    def start() -> None:
        try:
            started.append(
                start_auth_stack(
                    workdir / "auth", broker, f"mongodb://127.0.0.1:{port}/", ready_timeout=240
                )
            )
        except BaseException as exc:  # handed to the test's thread
            failed.append(exc)

    ferret_proc.signal(signal.SIGSTOP)
    starter = threading.Thread(target=start)
    try:
        starter.start()
        starter.join(STORE_SILENT_S)
        assert not failed, f"broker_auth gave up while the store was silent: {failed[0]}"
        assert not started, "broker_auth served before its store answered"
        ferret_proc.signal(signal.SIGCONT)
        starter.join(120)
        assert not failed, f"broker_auth did not start once the store answered: {failed[0]}"
        assert started and started[0].ready()
        log = started[0].proc.log_path.read_text()
        assert "MongoDB did not take the start-up" in log
    finally:
        ferret_proc.signal(signal.SIGCONT)
        starter.join(240)
        for stack in started:
            stack.close()
        ferret_proc.stop()
        broker.proc.stop()


def test_start_up_raises_at_once_what_waiting_cannot_cure(ferret: Mongo) -> None:
    """A store that answers no (here: a command it does not know) is not waited for: the
    service exits with the error instead of retrying for ever."""
    store = Store(ferret.url, f"metrics_{secrets.token_hex(4)}")
    try:
        began = time.monotonic()
        with pytest.raises(OperationFailure):
            store.wait_ready(then=lambda: store.db.command("noSuchCommandAnywhere"))
        assert time.monotonic() - began < 10
    finally:
        store.client.drop_database(store.db.name)
        store.close()
