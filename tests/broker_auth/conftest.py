"""broker_auth as a real process, with its own Mosquitto per test module.

Each module gets its own broker (reconciliation deletes unknown `device.*` clients, so a shared
broker would lose other tests' devices) and its own database on the session's FerretDB.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest

from stack.mqtt_probe import MqttProbe
from testing import procs
from testing.broker_auth import AuthStack, start_auth_stack
from tests.conftest import Mongo, MosquittoFactory

AuthStackFactory = Callable[..., AuthStack]


@pytest.fixture(scope="module")
def auth_stack_factory(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_factory: MosquittoFactory,
    ferret: Mongo,
    devnet: procs.Devnet,
) -> Iterator[AuthStackFactory]:
    """Start broker_auth stacks for this module (each with its own broker); stop them after.

    They use the session's devnet unless given another node (CLOSED_PORT_URL: none).
    """
    started: list[AuthStack] = []

    def start(
        name: str, node_url: str = devnet.url, pool: list[str] | None = None, **extra_env: str
    ) -> AuthStack:
        workdir = tmp_path_factory.mktemp(name)
        broker = mosquitto_factory(f"{workdir.name}-mosquitto")
        stack = start_auth_stack(workdir, broker, ferret.url, node_url, extra_env, pool=pool)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.close()
        stack.broker.proc.stop()


class Publisher:
    """A device publishing a reading every `period` seconds in its own thread."""

    def __init__(self, port: int, device_id: str, password: str, period: float = 0.1) -> None:
        self.probe = MqttProbe(port, f"device.{device_id}", password)
        self.topic = f"live/{device_id}/power"
        self.period = period
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Publisher:
        assert self.probe.connect(), "device could not connect"
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if self.probe.connected:
                with contextlib.suppress(Exception):
                    self.probe._client.publish(self.topic, f"{1000 + self.sent}", qos=0)
                    self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.probe.close()
