"""Buyers' notifications on MQTT `notify/<username>`: grant started, extended, ending, ended.

JSON `{"event", "product_id", "expires_at", "ts"}`, published at QoS 1 (not retained), so a
buyer's persistent session gets the ones sent while it was away. Only that buyer may read the
topic (role `notify-reader`: `notify/%u`).

broker_auth publishes as its own client `svc.notifier`, allowed to publish under `notify/`
and nothing else: at start it creates that client (or resets its password) over the control
client, then connects with it; paho queues what is published while it reconnects. Every
replica shares that client, so its password is derived from the dynamic-security admin
password they all hold (`notifier_password`): a replica that starts later sets the same one
and locks no other replica's notifier out. With a random password each, only the last one
started could reconnect, and the leader, started first, told its buyers nothing.
Notifications are sent after the change they announce is stored: a crash in between loses the
notice, never the access.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker_auth.broker import acl_model
from broker_auth.broker.errors import BrokerError
from broker_auth.broker.projector import Projector
from broker_auth.infra import metrics
from broker_auth.infra.background import BackgroundWorker
from broker_auth.infra.clock import rfc3339, utcnow

log = logging.getLogger(__name__)

RETRY_S = 1.0


def notifier_password(dynsec_admin_password: str) -> str:
    """`svc.notifier`'s password, the same on every replica; it reveals nothing of the admin
    password (HMAC-SHA256), and whoever holds that one controls the broker anyway."""
    digest = hmac.new(
        dynsec_admin_password.encode(), b"broker_auth svc.notifier password", hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Notifier(BackgroundWorker):
    def __init__(
        self,
        projector: Projector,
        host: str,
        port: int,
        password: str,
        retained: dict[str, str] | None = None,
    ) -> None:
        super().__init__("notifier")
        # The shop's public facts (info/seller-key), published retained at each connection.
        self.retained = dict(retained or {})
        self.projector = projector
        self.host = host
        self.port = port
        self._password = password  # notifier_password(): the same on every replica
        self._ready = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{acl_model.NOTIFIER_USERNAME}:{secrets.token_hex(6)}",
            protocol=mqtt.MQTTv5,
        )
        self._client.username_pw_set(acl_model.NOTIFIER_USERNAME, self._password)
        self._client.reconnect_delay_set(1, 5)
        self._client.on_connect = self._on_connect

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def _run(self) -> None:
        # The client is made once the control connection answers (the broker may start later).
        while not self.stopping:
            try:
                self._provision()
                break
            except BrokerError as exc:
                log.debug("notifier not provisioned yet: %s", exc)
                self._pause(RETRY_S)
        if self.stopping:
            return
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self._ready.set()

    def _provision(self) -> None:
        role = acl_model.notifier_role()
        self.projector.ensure_role_client(
            acl_model.NOTIFIER_USERNAME, self._password, role, "broker_auth notifier"
        )
        # A broker set up by an older version has the role without `info/#`: align its ACLs
        # before the first (retained) publish there.
        self.projector.dynsec.modify_role_acls(role)

    def _on_connect(self, client: mqtt.Client, *_args: object) -> None:
        for topic, payload in self.retained.items():
            client.publish(topic, payload, qos=1, retain=True)

    def send(self, username: str, event: str, product_id: str, expires_at: dt.datetime) -> None:
        payload = {
            "event": event,
            "product_id": product_id,
            "expires_at": rfc3339(expires_at),
            "ts": rfc3339(utcnow()),
        }
        self._client.publish(acl_model.notify_topic(username), json.dumps(payload), qos=1)
        metrics.NOTIFICATIONS.labels(event).inc()
        log.debug("notified %s: %s %s", username, event, product_id)

    def stop(self) -> None:
        super().stop()
        if self._ready.is_set():
            self._client.disconnect()
            self._client.loop_stop()
