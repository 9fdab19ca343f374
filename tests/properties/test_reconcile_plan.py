"""Reconciliation as a plan (broker/reconciliation.py), without Mosquitto or MongoDB: roles,
clients and groups to change, desired against actual."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from broker_auth.broker import acl_model
from broker_auth.broker.reconciliation import (
    Actual,
    Desired,
    NewClient,
    client_changes,
    desired_roles,
    group_changes,
    plan_reconciliation,
    product_rolename,
    role_changes,
)

PRODUCT = acl_model.product_role("p1", "live/p1/#")


def desired(
    devices: tuple[str, ...] = (),
    accounts: tuple[str, ...] = (),
    grants: dict[str, set[str]] | None = None,
    passwords: dict[str, str] | None = None,
) -> Desired:
    return Desired(
        product_roles=(PRODUCT,),
        devices=frozenset(devices),
        accounts=frozenset(accounts),
        grants={u: frozenset(product_rolename(p) for p in ps) for u, ps in (grants or {}).items()},
        device_passwords=passwords or {},
    )


def listing(role: acl_model.Role) -> dict[str, Any]:
    return {"rolename": role.rolename, "acls": [a.as_dict() for a in role.acls]}


def client(
    username: str, roles: tuple[str, ...] = (), groups: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "username": username,
        "roles": [{"rolename": r} for r in roles],
        "groups": [{"groupname": g} for g in groups],
    }


def buyer(username: str, *products: str) -> dict[str, Any]:
    """A buyer's client as it should be, with these product roles."""
    roles = (acl_model.notify_role(username).rolename, *map(product_rolename, products))
    return client(username, roles, (acl_model.BUYERS_GROUP,))


# -- roles ---------------------------------------------------------------------------------
def test_missing_roles_are_created_and_wrong_acls_replaced() -> None:
    want = desired(devices=("d1",), accounts=("alice",))
    roles = desired_roles(want)
    assert [r.rolename for r in roles] == ["product.p1", "device.d1", "notify.alice"]
    stale = {"rolename": "product.p1", "acls": [{"acltype": "subscribePattern", "topic": "x"}]}
    device = acl_model.device_role("d1")
    changes = role_changes(roles, {"product.p1": stale, "device.d1": listing(device)})
    assert [r.rolename for r in changes.create] == ["notify.alice"]
    assert [r.rolename for r in changes.modify] == ["product.p1"]


def test_roles_in_line_change_nothing() -> None:
    roles = desired_roles(desired(devices=("d1",), accounts=("alice",)))
    changes = role_changes(roles, {r.rolename: listing(r) for r in roles})
    assert changes.create == () and changes.modify == ()


# -- clients -------------------------------------------------------------------------------
def test_buyer_roles_follow_the_active_grants() -> None:
    want = desired(accounts=("alice",), grants={"alice": {"p1", "p2"}})
    have = Actual({}, {"alice": buyer("alice", "p2", "p3")})
    assert client_changes(want, have).commands == (
        {"command": "removeClientRole", "username": "alice", "rolename": "product.p3"},
        {"command": "addClientRole", "username": "alice", "rolename": "product.p1"},
    )


def test_a_client_without_an_account_loses_its_product_roles() -> None:
    want = desired(grants={"ghost": {"p1"}})  # a grant, but no account of that name
    have = Actual({}, {"ghost": client("ghost", ("product.p1", "other"))})
    assert client_changes(want, have).commands == (
        {"command": "removeClientRole", "username": "ghost", "rolename": "product.p1"},
    )


def test_a_buyer_gets_its_notification_role_back() -> None:
    want = desired(accounts=("alice",))
    have = Actual({}, {"alice": client("alice", (), (acl_model.BUYERS_GROUP,))})
    assert client_changes(want, have).commands == (
        {"command": "addClientRole", "username": "alice", "rolename": "notify.alice"},
    )


def test_service_accounts_are_never_touched() -> None:
    want = desired(accounts=("svc.notifier",), grants={"svc.notifier": {"p1"}})
    have = Actual({}, {"svc.notifier": client("svc.notifier", ("product.p9",))})
    plan = plan_reconciliation(want, have, flagged=())
    assert plan.commands == ()


def test_device_clients() -> None:
    want = desired(devices=("d1", "d2", "d3"), passwords={"d2": "secret"})
    have = Actual(
        {"device.gone": {"rolename": "device.gone"}},
        {
            "device.d1": client("device.d1"),  # its role was taken away
            "device.gone": client("device.gone", ("device.gone",)),  # deleted in MongoDB
            "device.old": client("device.old"),  # deleted, and its role too
        },
    )
    changes = client_changes(want, have)
    assert changes.create == (NewClient("device.d2", "secret", "device.d2"),)
    assert changes.unrecoverable == ("device.d3",)  # no password: re-provision it
    assert changes.commands == (
        {"command": "addClientRole", "username": "device.d1", "rolename": "device.d1"},
        {"command": "deleteClient", "username": "device.gone"},
        {"command": "deleteRole", "rolename": "device.gone"},
        {"command": "deleteClient", "username": "device.old"},
    )


# -- groups --------------------------------------------------------------------------------
def test_buyers_join_the_buyers_group() -> None:
    want = desired(accounts=("alice", "bob"))
    clients = {
        "alice": client("alice"),
        "bob": buyer("bob"),
        "carol": client("carol"),  # no account
        "device.x": client("device.x"),
    }
    assert group_changes(want, clients) == (
        {"command": "addGroupClient", "groupname": "buyers", "username": "alice"},
    )


# -- the whole plan ------------------------------------------------------------------------
def test_missing_buyer_clients_are_flagged_and_returning_ones_unflagged() -> None:
    want = desired(accounts=("alice", "bob", "carol"))
    have = Actual({}, {"bob": buyer("bob"), "carol": buyer("carol")})
    plan = plan_reconciliation(want, have, flagged=("bob", "dave"))
    assert plan.buyers_missing == ("alice",)
    assert plan.buyers_back == ("bob",)


usernames = st.sampled_from(["alice", "bob", "carol", "svc.x", "device.d1", "device.d9"])
products = st.sets(st.sampled_from(["p1", "p2", "p3"]), max_size=3)


def converge(want: Desired, have: Actual) -> Actual:
    """Mosquitto after the plan's commands (what the control client would do)."""
    plan = plan_reconciliation(want, have, flagged=())
    clients = {
        u: {**c, "roles": list(c["roles"]), "groups": list(c["groups"])}
        for u, c in have.clients.items()
    }
    for new in plan.clients.create:
        clients[new.username] = client(new.username, (new.rolename,))
    for cmd in plan.commands:
        target = clients.get(cmd.get("username", ""))
        if cmd["command"] == "deleteClient":
            clients.pop(cmd["username"])
        elif cmd["command"] == "addClientRole" and target is not None:
            target["roles"].append({"rolename": cmd["rolename"]})
        elif cmd["command"] == "removeClientRole" and target is not None:
            target["roles"] = [r for r in target["roles"] if r["rolename"] != cmd["rolename"]]
        elif cmd["command"] == "addGroupClient" and target is not None:
            target["groups"].append({"groupname": cmd["groupname"]})
    roles = {r.rolename: listing(r) for r in desired_roles(want)}
    return Actual(roles, clients)


@given(
    accounts=st.sets(st.sampled_from(["alice", "bob", "carol"])),
    grants=st.dictionaries(st.sampled_from(["alice", "bob", "carol", "dave"]), products),
    existing=st.dictionaries(usernames, st.tuples(products, st.booleans())),
    devices=st.sets(st.sampled_from(["d1", "d2"])),
)
def test_a_second_reconciliation_has_nothing_left_to_do(
    accounts: set[str],
    grants: dict[str, set[str]],
    existing: dict[str, tuple[set[str], bool]],
    devices: set[str],
) -> None:
    want = desired(tuple(devices), tuple(accounts), grants, passwords={"d1": "pw"})
    have = Actual(
        {},
        {
            u: client(u, tuple(map(product_rolename, ps)), (acl_model.BUYERS_GROUP,) if g else ())
            for u, (ps, g) in existing.items()
        },
    )
    after = converge(want, have)
    again = plan_reconciliation(want, after, flagged=())
    assert again.commands == () and again.clients.create == ()
    assert again.roles.create == () and again.roles.modify == ()
    for username in set(after.clients) & accounts:
        held = {r["rolename"] for r in after.clients[username]["roles"]}
        wanted = {product_rolename(p) for p in grants.get(username, set())}
        assert {r for r in held if r.startswith("product.")} == wanted
    # Service accounts are left exactly as they were.
    if "svc.x" in have.clients:
        assert after.clients["svc.x"] == have.clients["svc.x"]
