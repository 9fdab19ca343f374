"""Mosquitto's dynamic-security state as a projection of MongoDB (the source of truth).

Single changes (a new buyer, device, product, a grant starting or ending) are applied at once
by the services; `reconcile()` repairs everything else: at start-up, after each reconnection
to the broker and periodically. What it changes is computed as data in reconciliation.py
(roles, clients, groups: desired against actual); here it is read and sent.

A buyer or device client missing from Mosquitto cannot be recreated without its clear-text
password, which is never stored: a buyer's client is recreated when the buyer takes a new MQTT
password (accounts.py); a device must be re-provisioned. Both are logged as warnings.

Every change to Mosquitto holds the leader's `grants_lock`, so a grant change can never
interleave with a reconciliation that read the state before it.

Grant roles (`product.*` on buyer clients) are written only while this replica leads
(`leader.leads()`, the payments lease). Any replica may write a buyer's client itself (its
password, its existence: a new account, a rotated MQTT password); a standby then asks the
leader to bring the client's grant roles in line with MongoDB by a request in `grant_syncs`
(`_id`: username), which the leader's expiry loop carries out within about a second
(`run_grant_syncs`). A standby that synced the roles itself could read a grant as active, and
add its role back after the leader revoked it. The same requests retry a grant change the
broker did not take (a revocation during a broker outage), with backoff from
SYNC_RETRY_FIRST_S to SYNC_RETRY_MAX_S, until the broker answers.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections import defaultdict
from collections.abc import Mapping

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from broker_auth.broker import acl_model
from broker_auth.broker.acl_model import Role
from broker_auth.broker.control import DynsecClient
from broker_auth.broker.errors import BrokerError, BrokerRefusedError, BrokerUnavailableError
from broker_auth.broker.reconciliation import (
    Actual,
    Desired,
    Plan,
    names,
    plan_reconciliation,
    product_roles,
)
from broker_auth.broker.reconciliation import product_rolename as product_rolename
from broker_auth.infra import metrics
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.infra.leader import Leader

log = logging.getLogger(__name__)

# A grant-role sync the broker did not take is retried after 0.5, 1, 2, 4, 4, ... s.
SYNC_RETRY_FIRST_S = 0.5
SYNC_RETRY_MAX_S = 4.0


def sync_retry_delay(failed_attempts: int) -> float:
    """Seconds before the next attempt after `failed_attempts` failed ones (0: at once)."""
    if failed_attempts <= 0:
        return 0.0
    return min(SYNC_RETRY_MAX_S, SYNC_RETRY_FIRST_S * 2.0 ** (failed_attempts - 1))


class Projector:
    def __init__(
        self,
        store: Store,
        dynsec: DynsecClient,
        live_prefix: str = "live",
        known_device_passwords: Mapping[str, str] | None = None,
        leader: Leader | None = None,
    ) -> None:
        self.store = store
        self.dynsec = dynsec
        self.live_prefix = live_prefix
        # Devices whose password the service knows (the demo device): recreated when missing.
        self.known_device_passwords = dict(known_device_passwords or {})
        # Grant roles are written only while this replica leads; its lock orders every change.
        self.leader = leader or Leader()
        # Buyers whose grant roles the leader is to bring in line (see the docstring).
        self.sync_requests: Collection[Doc] = store.db["grant_syncs"]

    # -- roles ---------------------------------------------------------------------------
    def product_role(self, product: Doc) -> Role:
        return acl_model.product_role(str(product["_id"]), str(product["topic_filter"]))

    def device_role(self, device_id: str) -> Role:
        return acl_model.device_role(device_id, self.live_prefix)

    def ensure_role(self, role: Role) -> None:
        with self.leader.grants_lock:
            if not self.dynsec.create_role(role):
                self.dynsec.modify_role_acls(role)

    # -- single changes ------------------------------------------------------------------
    def ensure_buyer_client(self, username: str, password: str) -> None:
        """Create (or take over) the buyer's MQTT client with its password, group and own
        notifications; its grant roles follow from the leader (`sync_grants`)."""
        with self.leader.grants_lock:
            notify = acl_model.notify_role(username)
            self.ensure_role(notify)
            created = self.dynsec.create_client(
                username,
                password,
                roles=(notify.rolename,),
                groups=(acl_model.BUYERS_GROUP,),
                textname="buyer",
            )
            if not created:
                # A stale client of that name: align it with the account being created.
                self.dynsec.set_client_password(username, password)
                self.dynsec.add_group_client(acl_model.BUYERS_GROUP, username)
                client = self.dynsec.get_client(username) or {}
                if notify.rolename not in names(client.get("roles"), "rolename"):
                    self.dynsec.add_client_role(username, notify.rolename)
            elif self.store.grants.find_one({"username": username, "active": True}) is None:
                return  # a fresh client without product roles, and none are due
            self.sync_grants(username)

    def ensure_device_client(self, device_id: str, password: str) -> None:
        self.ensure_role_client(
            acl_model.device_username(device_id),
            password,
            self.device_role(device_id),
            f"device {device_id}",
        )

    def ensure_role_client(self, username: str, password: str, role: Role, textname: str) -> None:
        """A client with this password holding (at least) this role, created or aligned."""
        with self.leader.grants_lock:
            self.dynsec.create_role(role)
            if not self.dynsec.create_client(
                username, password, roles=(role.rolename,), textname=textname
            ):
                self.dynsec.set_client_password(username, password)
                client = self.dynsec.get_client(username) or {}
                if role.rolename not in names(client.get("roles"), "rolename"):
                    self.dynsec.add_client_role(username, role.rolename)

    def _fenced(self) -> None:
        if not self.leader.leads():
            raise BrokerUnavailableError("payments lease not held: grant changes are the leader's")

    def add_grant_role(self, username: str, product_id: str) -> bool:
        """Give the buyer's client the product role. False if the client is missing."""
        rolename = product_rolename(product_id)
        self._fenced()
        with self.leader.grants_lock:
            r = self.dynsec.call(
                {"command": "addClientRole", "username": username, "rolename": rolename},
                tolerate=("Client not found", "Role not found", "Internal error"),
            )
            if r.error == "Client not found":
                self._mark_buyer_missing(username)
                return False
            if r.error == "Role not found":
                product = self.store.products.find_one({"_id": product_id})
                if product is None:
                    log.error("grant for unknown product %s", product_id)
                    return False
                self.ensure_role(self.product_role(product))
                self.dynsec.add_client_role(username, rolename)
            elif r.error == "Internal error":
                # Mosquitto 2.0 answers this when the client already has the role.
                client = self.dynsec.get_client(username) or {}
                if rolename not in names(client.get("roles"), "rolename"):
                    raise BrokerRefusedError("addClientRole", "Internal error")
            return True

    def remove_grant_role(self, username: str, product_id: str) -> None:
        self._fenced()
        with self.leader.grants_lock:
            self.dynsec.remove_client_role(username, product_rolename(product_id))

    # -- grant-role syncs ----------------------------------------------------------------
    def sync_grants(self, username: str) -> None:
        """Bring the buyer's product roles in line with its active grants: at once if
        this replica leads, else by asking the leader. A sync the broker did not take is retried."""
        if not self.leader.leads():
            self.request_grant_sync(username)
            return
        try:
            with self.leader.grants_lock:
                self._sync_client_grants(username)
        except BrokerError as exc:
            log.warning("grant roles of %r: broker update deferred (%s)", username, exc)
            self.request_grant_sync(username, failed_attempts=1)

    def request_grant_sync(self, username: str, failed_attempts: int = 0) -> None:
        """Ask the leader to bring this buyer's grant roles in line with MongoDB, after
        `sync_retry_delay(failed_attempts)`. A newer request replaces an older one."""
        now = utcnow()
        request = {
            "token": secrets.token_hex(8),
            "attempts": failed_attempts,
            "next_at": now + dt.timedelta(seconds=sync_retry_delay(failed_attempts)),
            "requested_at": now,
        }
        try:
            self.sync_requests.update_one({"_id": username}, {"$set": request}, upsert=True)
        except DuplicateKeyError:  # a concurrent upsert inserted it first
            self.sync_requests.update_one({"_id": username}, {"$set": request})

    def run_grant_syncs(self) -> dt.datetime | None:
        """Carry out the requests that are due (the leader's expiry loop calls this);
        returns when the next one falls due. While the broker does not answer, each request
        waits longer (sync_retry_delay) and none blocks the others for long."""
        if not self.leader.leads():
            return None
        next_due: dt.datetime | None = None
        broker_down = False
        for request in list(self.sync_requests.find()):
            username = str(request["_id"])
            attempts = int(request.get("attempts", 0))
            keyed = {"_id": username, "token": request.get("token")}
            if as_utc(request["next_at"]) > utcnow():
                due = as_utc(request["next_at"])
                next_due = due if next_due is None else min(next_due, due)
                continue
            error: Exception | None = None
            if broker_down:
                error = BrokerUnavailableError("broker unavailable")
            else:
                try:
                    with self.leader.grants_lock:
                        self._sync_client_grants(username)
                except BrokerUnavailableError as exc:
                    broker_down, error = True, exc
                except BrokerRefusedError as exc:
                    error = exc
            if error is None:
                # Only the request we carried out: a newer one (new token) runs next pass.
                self.sync_requests.delete_one(keyed)
                if attempts:
                    log.info(
                        "grant roles of %r in line after %d failed attempt(s)", username, attempts
                    )
                continue
            attempts += 1
            due = utcnow() + dt.timedelta(seconds=sync_retry_delay(attempts))
            self.sync_requests.update_one(keyed, {"$set": {"attempts": attempts, "next_at": due}})
            next_due = due if next_due is None else min(next_due, due)
            log.debug("grant roles of %r: attempt %d failed (%s)", username, attempts, error)
        return next_due

    def _sync_client_grants(self, username: str) -> None:
        """Make the client's product roles match the buyer's active grants (the leader)."""
        self._fenced()
        want = {
            product_rolename(str(g["product_id"]))
            for g in self.store.grants.find({"username": username, "active": True})
        }
        client = self.dynsec.get_client(username)
        if client is None:
            self._mark_buyer_missing(username)
            return
        have = product_roles(client)
        for rolename in sorted(want - have):
            self.dynsec.add_client_role(username, rolename)
        for rolename in sorted(have - want):
            self.dynsec.remove_client_role(username, rolename)

    def _mark_buyer_missing(self, username: str) -> None:
        r = self.store.accounts.update_one(
            {"_id": username, "mqtt_missing": {"$ne": True}}, {"$set": {"mqtt_missing": True}}
        )
        if r.modified_count:
            log.warning(
                "MQTT client %r is missing in Mosquitto; the buyer brings it back with a new "
                "MQTT password (POST /api/account/mqtt-password)",
                username,
            )

    # -- full reconciliation -------------------------------------------------------------
    def reconcile(self) -> int:
        """Bring Mosquitto in line with MongoDB; returns the number of changes made."""
        with self.leader.grants_lock:
            try:
                changes = self._reconcile()
            except Exception:
                metrics.RECONCILES.labels("error").inc()
                raise
            metrics.RECONCILES.labels("ok").inc()
            metrics.RECONCILE_CHANGES.inc(changes)
            if changes:
                log.info("reconciliation made %d change(s) to Mosquitto", changes)
            return changes

    def _reconcile(self) -> int:
        self._ensure_static_parts()
        desired, flagged = self._desired()
        actual = Actual(
            roles={str(r.get("rolename")): r for r in self.dynsec.list_roles()},
            clients={str(c.get("username")): c for c in self.dynsec.list_clients()},
        )
        return self._send(plan_reconciliation(desired, actual, flagged))

    def _ensure_static_parts(self) -> None:
        """Parts a fresh bootstrap file already has; created only if missing (the groups' later
        role is added to older files)."""
        # (The notifier aligns its own role's ACLs when it provisions its client.)
        roles = (
            acl_model.avg_reader_role(),
            acl_model.info_reader_role(),
            acl_model.notifier_role(),
        )
        for role in roles:
            self.dynsec.create_role(role)
        self.dynsec.call(
            {
                "command": "createGroup",
                "groupname": acl_model.BUYERS_GROUP,
                "roles": [{"rolename": acl_model.ROLE_AVG_READER}],
            },
            tolerate=("Group already exists",),
        )
        for group in (acl_model.BUYERS_GROUP, acl_model.ANONYMOUS_GROUP):
            self.dynsec.call(
                {
                    "command": "addGroupRole",
                    "groupname": group,
                    "rolename": acl_model.ROLE_INFO_READER,
                },
                tolerate=("Group not found", "Group is already in this role"),
            )

    def _desired(self) -> tuple[Desired, set[str]]:
        """What MongoDB says Mosquitto should hold, and the buyers flagged `mqtt_missing`."""
        accounts = list(self.store.accounts.find({}, {"mqtt_missing": 1}))
        grants: dict[str, set[str]] = defaultdict(set)
        for g in self.store.grants.find({"active": True}, {"username": 1, "product_id": 1}):
            grants[str(g["username"])].add(product_rolename(str(g["product_id"])))
        desired = Desired(
            product_roles=tuple(self.product_role(p) for p in self.store.products.find()),
            devices=frozenset(
                str(d["_id"]) for d in self.store.devices.find({"enabled": {"$ne": False}})
            ),
            accounts=frozenset(str(a["_id"]) for a in accounts),
            grants={username: frozenset(roles) for username, roles in grants.items()},
            device_passwords=self.known_device_passwords,
            live_prefix=self.live_prefix,
        )
        return desired, {str(a["_id"]) for a in accounts if a.get("mqtt_missing")}

    def _send(self, plan: Plan) -> int:
        """Carry out a reconciliation plan: roles first and one by one (the client changes
        need them to exist), then the clients to recreate, then the rest as one batch."""
        for role in plan.roles.create:
            self.dynsec.create_role(role)
        for role in plan.roles.modify:
            self.dynsec.modify_role_acls(role)
        for client in plan.clients.create:
            self.dynsec.create_client(client.username, client.password, roles=(client.rolename,))
        for username in plan.clients.unrecoverable:
            log.warning(
                "device client %r is missing in Mosquitto and its password is not stored; "
                "re-provision the device",
                username,
            )
        for command in plan.commands:
            if command["command"] == "deleteClient":
                log.warning(
                    "deleting MQTT client %r: no such device in MongoDB", command["username"]
                )
        for username in plan.buyers_missing:
            self._mark_buyer_missing(username)
        for username in plan.buyers_back:
            self.store.accounts.update_one({"_id": username}, {"$set": {"mqtt_missing": False}})
        for response in self.dynsec.execute(list(plan.commands)):
            if response.error is not None:
                log.error("reconciliation: %s failed: %s", response.command, response.error)
        return plan.changes
