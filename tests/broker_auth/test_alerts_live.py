"""The alert rules live: Debian's real Prometheus scrapes a real broker_auth and evaluates
prometheus/alerts.yml, and an alert fires when its condition is made real (promtool's unit
tests, tests/test_alert_rules.py, cover each rule's timing on synthetic series).

Made real here: the deposit pool emptied by orders (DepositPoolEmpty), then the only
broker_auth process SIGKILLed (ProcessDown, and NoPaymentsLeader: nobody holds the lease).
Each rule waits its minute before firing, as a seller wants.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testing.addresses import random_address
from testing.broker_auth import place_order
from testing.procs import wait_for
from testing.prometheus import start_prometheus
from tests.broker_auth.conftest import AuthStackFactory

pytestmark = pytest.mark.timeout(600)


def test_alerts_fire_when_the_pool_is_emptied_and_when_broker_auth_dies(
    auth_stack_factory: AuthStackFactory, tmp_path: Path
) -> None:
    stack = auth_stack_factory("alerts-live", pool=[random_address() for _ in range(2)])
    wait_for(lambda: (stack.health() or {}).get("status") == "ok", 30, "healthz ok")
    prometheus = start_prometheus(tmp_path / "prometheus", {"broker_auth": stack.api_url})
    try:
        stack.create_product("slow", "live/plug-1/#", 3600)
        # A healthy stack: none of the alerts made real below (the node is not under test:
        # this stack's node URL may be unreachable, so NodeUnreachable may pend).
        time.sleep(3)
        quiet = prometheus.alerts()
        assert not {"DepositPoolEmpty", "ProcessDown", "NoPaymentsLeader"} & quiet.keys(), quiet
        buyer = ("alert-buyer", "alert-password-1")
        stack.register(*buyer)
        for _ in range(2):
            place_order(stack.api_url, *buyer, "slow", 0.01)
        assert (stack.health() or {})["free_addresses"] == 0
        wait_for(lambda: prometheus.alerts().get("DepositPoolEmpty") == "pending", 30, "pending")
        wait_for(lambda: prometheus.alerts().get("DepositPoolEmpty") == "firing", 90, "firing", 1)
        stack.proc.kill()  # the only replica: its target is down, its series go stale
        wait_for(
            lambda: (
                prometheus.alerts().get("ProcessDown") == "firing"
                and prometheus.alerts().get("NoPaymentsLeader") == "firing"
            ),
            120,
            "process down and no leader firing",
            1,
        )
    finally:
        prometheus.proc.stop()
