"""What a reconciliation changes in Mosquitto, as data: desired (MongoDB) against actual (the
dynamic-security plugin's roles and clients), one pure function per concept like the plugin's
own files: `role_changes`, `client_changes`, `group_changes`; `plan_reconciliation` puts them
together and the projector (projector.py) sends the result.

- Product, device and notification roles are created when missing and their ACLs fixed.
- Device clients get their role; a missing one is recreated only if its password is known.
- Buyer clients hold exactly the `product.<id>` roles of their active grants, their own
  notification role, and the `buyers` group; other clients hold no product role.
- Clients named `device.<id>` without an enabled device are deleted, with their role.
- Service accounts (`svc.*`) are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from broker_auth.broker import acl_model
from broker_auth.broker.acl_model import Role
from broker_auth.broker.control import acl_key

PRODUCT_ROLE_PREFIX = "product."
DEVICE_PREFIX = "device."
SERVICE_PREFIX = "svc."

# One dynamic-security command (`{"command": ..., ...}`), as the control client sends it.
Command = dict[str, Any]
# A plugin's listing of a client or role (`listClients`, `listRoles` with verbose).
Listing = Mapping[str, Any]


def product_rolename(product_id: str) -> str:
    return f"{PRODUCT_ROLE_PREFIX}{product_id}"


def names(items: object, key: str) -> set[str]:
    """The `key` of each entry of a plugin's list (`roles`, `groups`, ...)."""
    if not isinstance(items, list):
        return set()
    return {str(i.get(key)) for i in items if isinstance(i, dict)}


def is_product_role(rolename: str) -> bool:
    return rolename.startswith(PRODUCT_ROLE_PREFIX)


def product_roles(client: Listing) -> set[str]:
    return {r for r in names(client.get("roles"), "rolename") if is_product_role(r)}


@dataclass(frozen=True)
class Desired:
    """What MongoDB says Mosquitto should hold."""

    product_roles: tuple[Role, ...]
    devices: frozenset[str]  # enabled devices (a deleted one keeps its document, no client)
    accounts: frozenset[str]  # buyers
    grants: Mapping[str, frozenset[str]]  # buyer -> product rolenames of active grants
    device_passwords: Mapping[str, str]  # devices whose password is known (the demo device)
    live_prefix: str = "live"


@dataclass(frozen=True)
class Actual:
    """What Mosquitto holds, by name."""

    roles: Mapping[str, Listing]
    clients: Mapping[str, Listing]


@dataclass(frozen=True)
class NewClient:
    """A device client to create again (its password is known)."""

    username: str
    password: str
    rolename: str


@dataclass(frozen=True)
class RoleChanges:
    """Roles to create and roles whose ACLs to replace, sent one by one before the rest."""

    create: tuple[Role, ...] = ()
    modify: tuple[Role, ...] = ()


@dataclass(frozen=True)
class ClientChanges:
    """Clients to create, commands on clients' roles and deletions, and the device clients
    that cannot be brought back (no password stored: the device must be re-provisioned)."""

    create: tuple[NewClient, ...] = ()
    commands: tuple[Command, ...] = ()
    unrecoverable: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Everything one reconciliation changes, and the buyers' `mqtt_missing` flags to move."""

    roles: RoleChanges
    clients: ClientChanges
    groups: tuple[Command, ...]
    buyers_missing: tuple[str, ...]  # an account whose client is not in Mosquitto
    buyers_back: tuple[str, ...]  # flagged missing, but the client is there again

    @property
    def commands(self) -> tuple[Command, ...]:
        """The commands sent as one batch once the roles and new clients exist."""
        return self.clients.commands + self.groups

    @property
    def changes(self) -> int:
        return (
            len(self.roles.create)
            + len(self.roles.modify)
            + len(self.clients.create)
            + len(self.commands)
        )


def desired_roles(desired: Desired) -> list[Role]:
    """Product roles, one role per enabled device, one notification role per buyer."""
    roles = list(desired.product_roles)
    roles += [acl_model.device_role(d, desired.live_prefix) for d in sorted(desired.devices)]
    roles += [acl_model.notify_role(username) for username in sorted(desired.accounts)]
    return roles


def role_changes(desired: Iterable[Role], actual: Mapping[str, Listing]) -> RoleChanges:
    """Missing roles to create, and roles whose ACLs differ from the model."""
    create: list[Role] = []
    modify: list[Role] = []
    for role in desired:
        current = actual.get(role.rolename)
        if current is None:
            create.append(role)
        elif _acls(current) != {acl_key(a) for a in role.acls}:
            modify.append(role)
    return RoleChanges(tuple(create), tuple(modify))


def client_changes(desired: Desired, actual: Actual) -> ClientChanges:
    """Device clients' roles, stale device clients, and buyers' product and notify roles."""
    create, commands, unrecoverable = _device_clients(desired, actual.clients)
    for username, client in actual.clients.items():
        if username.startswith(SERVICE_PREFIX):
            continue
        if _stale_device(username, desired):
            commands.append({"command": "deleteClient", "username": username})
            if username in actual.roles:
                commands.append({"command": "deleteRole", "rolename": username})
            continue
        commands += _client_roles(username, client, desired)
    return ClientChanges(tuple(create), tuple(commands), tuple(unrecoverable))


def group_changes(desired: Desired, clients: Mapping[str, Listing]) -> tuple[Command, ...]:
    """Every buyer's client in the `buyers` group."""
    return tuple(
        {"command": "addGroupClient", "groupname": acl_model.BUYERS_GROUP, "username": username}
        for username, client in clients.items()
        if username in desired.accounts
        and not username.startswith(SERVICE_PREFIX)
        and not _stale_device(username, desired)
        and acl_model.BUYERS_GROUP not in names(client.get("groups"), "groupname")
    )


def plan_reconciliation(desired: Desired, actual: Actual, flagged: Iterable[str]) -> Plan:
    """The whole change; `flagged`: the buyers whose account says their client is missing."""
    flagged = set(flagged)
    return Plan(
        roles=role_changes(desired_roles(desired), actual.roles),
        clients=client_changes(desired, actual),
        groups=group_changes(desired, actual.clients),
        buyers_missing=tuple(sorted(desired.accounts - set(actual.clients))),
        buyers_back=tuple(sorted((desired.accounts & flagged) & set(actual.clients))),
    )


def _acls(role: Listing) -> set[tuple[str, str, bool, int]]:
    return {acl_key(a) for a in role.get("acls", []) if isinstance(a, dict)}


def _stale_device(username: str, desired: Desired) -> bool:
    return username.startswith(DEVICE_PREFIX) and (
        username[len(DEVICE_PREFIX) :] not in desired.devices
    )


def _device_clients(
    desired: Desired, clients: Mapping[str, Listing]
) -> tuple[list[NewClient], list[Command], list[str]]:
    create: list[NewClient] = []
    commands: list[Command] = []
    unrecoverable: list[str] = []
    for device_id in sorted(desired.devices):
        username = acl_model.device_username(device_id)
        rolename = acl_model.device_role(device_id, desired.live_prefix).rolename
        client = clients.get(username)
        if client is None:
            password = desired.device_passwords.get(device_id)
            if password is None:
                unrecoverable.append(username)
            else:
                create.append(NewClient(username, password, rolename))
        elif rolename not in names(client.get("roles"), "rolename"):
            commands.append(_role_command("addClientRole", username, rolename))
    return create, commands, unrecoverable


def _client_roles(username: str, client: Listing, desired: Desired) -> list[Command]:
    have = product_roles(client)
    buyer = username in desired.accounts
    want = desired.grants.get(username, frozenset()) if buyer else frozenset()
    commands = [_role_command("removeClientRole", username, r) for r in sorted(have - want)]
    commands += [_role_command("addClientRole", username, r) for r in sorted(want - have)]
    notify = acl_model.notify_role(username).rolename
    if buyer and notify not in names(client.get("roles"), "rolename"):
        commands.append(_role_command("addClientRole", username, notify))
    return commands


def _role_command(command: str, username: str, rolename: str) -> Command:
    return {"command": command, "username": username, "rolename": rolename}
