"""The `$SYS` exporter's MQTT client (svc.metrics), made by broker_auth once the broker answers.

broker_auth administers the broker, so it creates the exporter's client and role (read
`$SYS/broker/#`, nothing else) with BROKER_METRICS_MQTT_PASSWORD, which the exporter is given
too: a broker set up before the exporter existed gets it at the next start, and a role changed
by hand is brought back to its ACLs. Without the password (the seller stopped running the
exporter) the client is removed: no login stays on the broker with an old password.
"""

from __future__ import annotations

import logging

from broker_auth.broker import acl_model
from broker_auth.broker.errors import BrokerError
from broker_auth.broker.projector import Projector
from broker_auth.infra.background import BackgroundWorker

log = logging.getLogger(__name__)

RETRY_S = 2.0
WARN_AFTER = 15  # failed attempts (about 30 s) before the seller is told


class MetricsAccount(BackgroundWorker):
    def __init__(self, projector: Projector, password: str | None) -> None:
        super().__init__("metrics-account")
        self.projector = projector
        self._password = password
        self.done = False

    def _run(self) -> None:
        failures = 0
        while not self.stopping:
            try:
                self._provision()
            except BrokerError as exc:
                failures += 1
                level = logging.WARNING if failures == WARN_AFTER else logging.DEBUG
                log.log(level, "the $SYS exporter's MQTT client is not made yet: %s", exc)
                self._pause(RETRY_S)
                continue
            self.done = True
            return

    def _provision(self) -> None:
        if self._password is None:
            self._remove()
            return
        role = acl_model.metrics_role()
        self.projector.ensure_role_client(
            acl_model.METRICS_USERNAME, self._password, role, "iot-broker-metrics ($SYS exporter)"
        )
        self.projector.dynsec.modify_role_acls(role)  # least privilege, whatever was there
        log.info("MQTT client %s ready for the $SYS exporter", acl_model.METRICS_USERNAME)

    def _remove(self) -> None:
        if self.projector.dynsec.get_client(acl_model.METRICS_USERNAME) is None:
            return
        self.projector.dynsec.delete_client(acl_model.METRICS_USERNAME)
        log.info(
            "no BROKER_METRICS_MQTT_PASSWORD: the $SYS exporter's MQTT client %s is removed",
            acl_model.METRICS_USERNAME,
        )
