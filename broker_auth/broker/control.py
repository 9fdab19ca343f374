"""Client for Mosquitto's dynamic-security control API over MQTT.

Commands are JSON `{"commands": [...]}` published to `$CONTROL/dynamic-security/v1`; the
plugin answers on `$CONTROL/dynamic-security/v1/response` with `{"responses": [...]}`, each
response echoing the command's `correlationData`, which is how answers are matched to callers
(several threads may send commands at once).

Commands are published with QoS 0 and never queued while disconnected: a command that is
late could undo a newer decision (e.g. re-add a role that was since revoked). A caller that
gets a `BrokerError` (broker/errors.py) leaves MongoDB as the truth; the periodic
reconciliation and the reconciliation after each reconnect repair Mosquitto.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker_auth.broker.acl_model import Acl, Role
from broker_auth.broker.errors import BrokerRefusedError, BrokerUnavailableError

log = logging.getLogger(__name__)

COMMAND_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = "$CONTROL/dynamic-security/v1/response"
BATCH_LIMIT = 100
PAGE_SIZE = 500

# Error texts of the plugin (Mosquitto 2.0) that mean "already in the wanted state".
ALREADY_EXISTS = ("Client already exists", "Role already exists", "Group already exists")
NOT_FOUND = ("Client not found", "Role not found", "Group not found")
ALREADY_IN_GROUP = "Client is already in this group"


@dataclass(frozen=True)
class Response:
    command: str
    error: str | None
    data: dict[str, Any]


@dataclass
class _Batch:
    remaining: set[str]
    results: dict[str, Response] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    failed: bool = False


class DynsecClient:
    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        timeout_s: float = 5.0,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self._on_ready = on_ready
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[str, _Batch] = {}
        self._ready = threading.Event()
        self._sub_mid: int | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{username}:control-{self._prefix}",
            protocol=mqtt.MQTTv5,
        )
        self._client.username_pw_set(username, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_message = self._handle_message
        self._started = False

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting until stop()."""
        if self._started:
            return
        self._started = True
        self._client.connect_async(self.host, self.port, keepalive=15)
        self._client.loop_start()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        self._fail_pending()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    # -- paho callbacks (network thread) -------------------------------------------------
    def _handle_connect(
        self,
        client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the control client: %s", reason)
            return
        _result, mid = client.subscribe(RESPONSE_TOPIC, qos=0)
        self._sub_mid = mid

    def _handle_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: object,
        mid: int,
        codes: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        if mid != self._sub_mid:
            return
        if any(c.is_failure for c in codes):
            log.error("broker refused the dynamic-security response subscription: %s", codes)
            return
        log.info("dynamic-security control client connected to %s:%s", self.host, self.port)
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready()

    def _handle_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if self._ready.is_set() and self._started:
            log.warning("dynamic-security control client disconnected: %s", reason)
        self._ready.clear()
        self._fail_pending()

    def _handle_message(
        self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage
    ) -> None:
        try:
            doc = json.loads(msg.payload)
            responses = doc.get("responses", [])
        except (ValueError, AttributeError):
            log.warning("ignoring a malformed dynamic-security response")
            return
        with self._lock:
            for item in responses:
                if not isinstance(item, dict):
                    continue
                corr = item.get("correlationData")
                if not isinstance(corr, str) or corr not in self._pending:
                    continue  # another control client's answer, or one we gave up on
                batch = self._pending[corr]
                data = item.get("data")
                batch.results[corr] = Response(
                    str(item.get("command", "")),
                    str(item["error"]) if item.get("error") is not None else None,
                    data if isinstance(data, dict) else {},
                )
                batch.remaining.discard(corr)
                del self._pending[corr]
                if not batch.remaining:
                    batch.done.set()

    def _fail_pending(self) -> None:
        with self._lock:
            batches = set(map(id, self._pending.values()))
            for batch in list(self._pending.values()):
                batch.failed = True
                batch.done.set()
            self._pending.clear()
        if batches:
            log.warning("%d pending dynamic-security batches failed", len(batches))

    # -- commands ------------------------------------------------------------------------
    def execute(self, commands: Sequence[dict[str, Any]]) -> list[Response]:
        """Run commands (in order) and return one response per command."""
        out: list[Response] = []
        for start in range(0, len(commands), BATCH_LIMIT):
            out.extend(self._execute_batch(commands[start : start + BATCH_LIMIT]))
        return out

    def _execute_batch(self, commands: Sequence[dict[str, Any]]) -> list[Response]:
        if not commands:
            return []
        if not self._ready.is_set():
            raise BrokerUnavailableError("not connected to the broker")
        tagged = []
        keys = []
        for command in commands:
            key = f"{self._prefix}-{next(self._counter)}"
            keys.append(key)
            tagged.append({**command, "correlationData": key})
        batch = _Batch(remaining=set(keys))
        with self._lock:
            for key in keys:
                self._pending[key] = batch
        started = time.monotonic()
        info = self._client.publish(COMMAND_TOPIC, json.dumps({"commands": tagged}), qos=0)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._forget(keys)
            raise BrokerUnavailableError(f"publish failed: {mqtt.error_string(info.rc)}")
        if not batch.done.wait(self.timeout_s) or batch.failed:
            self._forget(keys)
            raise BrokerUnavailableError(
                f"no answer from the broker within {time.monotonic() - started:.1f}s"
            )
        return [batch.results[k] for k in keys]

    def _forget(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)

    def call(self, command: dict[str, Any], tolerate: Sequence[str] = ()) -> Response:
        (response,) = self.execute([command])
        if response.error is not None and response.error not in tolerate:
            raise BrokerRefusedError(response.command, response.error)
        return response

    # -- typed helpers -------------------------------------------------------------------
    def get_client(self, username: str) -> dict[str, Any] | None:
        r = self.call({"command": "getClient", "username": username}, tolerate=NOT_FOUND)
        if r.error is not None:
            return None
        client = r.data.get("client")
        return client if isinstance(client, dict) else None

    def _paged(self, command: str, key: str) -> list[Any]:
        items: list[Any] = []
        offset = 0
        while True:
            r = self.call(
                {"command": command, "verbose": True, "count": PAGE_SIZE, "offset": offset}
            )
            page = r.data.get(key, [])
            items.extend(page)
            total = int(r.data.get("totalCount", 0))
            offset += len(page)
            if not page or offset >= total:
                return items

    def list_clients(self) -> list[dict[str, Any]]:
        return [c for c in self._paged("listClients", "clients") if isinstance(c, dict)]

    def list_roles(self) -> list[dict[str, Any]]:
        return [r for r in self._paged("listRoles", "roles") if isinstance(r, dict)]

    def create_client(
        self,
        username: str,
        password: str,
        roles: Sequence[str] = (),
        groups: Sequence[str] = (),
        textname: str = "",
    ) -> bool:
        """True if created, False if a client of that name already existed."""
        r = self.call(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "textname": textname,
                "roles": [{"rolename": name} for name in roles],
                "groups": [{"groupname": name} for name in groups],
            },
            tolerate=ALREADY_EXISTS,
        )
        return r.error is None

    def delete_client(self, username: str) -> None:
        self.call({"command": "deleteClient", "username": username}, tolerate=NOT_FOUND)

    def set_client_password(self, username: str, password: str) -> None:
        self.call({"command": "setClientPassword", "username": username, "password": password})

    def kick(self, username: str) -> None:
        """Disconnect every connection of a client now (disabling one disconnects it); it may
        log in again at once with what it is allowed now."""
        self.call({"command": "disableClient", "username": username})
        self.call({"command": "enableClient", "username": username})

    def add_client_role(self, username: str, rolename: str) -> None:
        self.call({"command": "addClientRole", "username": username, "rolename": rolename})

    def remove_client_role(self, username: str, rolename: str) -> None:
        self.call(
            {"command": "removeClientRole", "username": username, "rolename": rolename},
            tolerate=("Client not found",),
        )

    def add_group_client(self, groupname: str, username: str) -> None:
        self.call(
            {"command": "addGroupClient", "groupname": groupname, "username": username},
            tolerate=(ALREADY_IN_GROUP,),
        )

    def create_role(self, role: Role) -> bool:
        r = self.call(
            {
                "command": "createRole",
                "rolename": role.rolename,
                "textname": role.textname,
                "acls": [a.as_dict() for a in role.acls],
            },
            tolerate=ALREADY_EXISTS,
        )
        return r.error is None

    def modify_role_acls(self, role: Role) -> None:
        self.call(
            {
                "command": "modifyRole",
                "rolename": role.rolename,
                "acls": [a.as_dict() for a in role.acls],
            }
        )

    def add_role_acl(self, rolename: str, acl: Acl) -> None:
        self.call({"command": "addRoleACL", "rolename": rolename, **acl.as_dict()})

    def delete_role(self, rolename: str) -> None:
        self.call({"command": "deleteRole", "rolename": rolename}, tolerate=NOT_FOUND)


def acl_key(acl: dict[str, Any] | Acl) -> tuple[str, str, bool, int]:
    """Comparable form of an ACL, from the plugin's JSON or from the model."""
    d = acl.as_dict() if isinstance(acl, Acl) else acl
    priority = d.get("priority", 0)
    return (
        str(d.get("acltype")),
        str(d.get("topic")),
        bool(d.get("allow")),
        priority if isinstance(priority, int) else 0,
    )
