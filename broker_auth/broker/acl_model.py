"""Who may do what on the broker: the desired dynamic-security state, as plain data.

Mosquitto's dynamic-security plugin is a projection of this model; broker_auth creates and
reconciles it over `$CONTROL/dynamic-security/v1`, and `deploy.dynsec_file` writes its static
part into the plugin's bootstrap file before Mosquitto first starts.

Default access is deny for everything but unsubscribing. Receiving is denied by default too
(`publishClientReceive`), so a client whose grant was revoked stops getting messages even on
a subscription its persistent session still holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AclType = Literal[
    "publishClientSend",
    "publishClientReceive",
    "subscribeLiteral",
    "subscribePattern",
    "unsubscribeLiteral",
    "unsubscribePattern",
]

# Service accounts carry a dot; buyer usernames and device ids may not, so they never collide.
ADMIN_USERNAME = "svc.broker-admin"
INGEST_USERNAME = "svc.ingest"
ANONYMOUS_GROUP = "anonymous"
BUYERS_GROUP = "buyers"
ROLE_ADMIN = "svc-admin"
ROLE_INGEST = "svc-ingest"
ROLE_AVG_READER = "avg-reader"
NOTIFIER_USERNAME = "svc.notifier"
ROLE_NOTIFIER = "svc-notifier"
METRICS_USERNAME = "svc.metrics"  # iot-broker-metrics, Mosquitto's $SYS exporter
ROLE_METRICS = "svc-metrics"
ROLE_INFO_READER = "info-reader"
INFO_PREFIX = "info"  # the shop's public facts, retained (info/seller-key)
NOTIFY_PREFIX = "notify"
CONTROL_TOPIC = "$CONTROL/dynamic-security/#"

DEFAULT_ACL_ACCESS: dict[str, bool] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}


@dataclass(frozen=True)
class Acl:
    acltype: AclType
    topic: str
    allow: bool = True
    priority: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "acltype": self.acltype,
            "topic": self.topic,
            "allow": self.allow,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class Role:
    rolename: str
    acls: tuple[Acl, ...]
    textname: str = ""


@dataclass(frozen=True)
class Client:
    username: str
    password: str
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    textname: str = ""


@dataclass(frozen=True)
class Group:
    groupname: str
    roles: tuple[str, ...] = field(default=())


def _read(topic_filter: str) -> tuple[Acl, ...]:
    """Subscribe to (and receive from) anything matching `topic_filter`."""
    return (Acl("subscribePattern", topic_filter), Acl("publishClientReceive", topic_filter))


def admin_role() -> Role:
    return Role(
        ROLE_ADMIN,
        (
            Acl("publishClientSend", CONTROL_TOPIC),
            *_read(CONTROL_TOPIC),
        ),
        "broker_auth's control client: dynamic-security administration only",
    )


# Where ingest workers forward what the store accepted to the averager (raw readings: only the
# ingest role may read it).
ACCEPTED_TOPIC = "ingest/accepted"


def ingest_role(live_prefix: str = "live", avg_prefix: str = "avg") -> Role:
    return Role(
        ROLE_INGEST,
        (
            *_read(f"{live_prefix}/#"),
            # Several workers share one subscription; Mosquitto checks the filter with its prefix.
            *_read(f"$share/+/{live_prefix}/#"),
            Acl("publishClientSend", f"{avg_prefix}/#"),
            Acl("publishClientSend", ACCEPTED_TOPIC),
            *_read(ACCEPTED_TOPIC),
        ),
        "ingest workers and averager: read raw readings, forward accepted ones, publish averages",
    )


def avg_reader_role(avg_prefix: str = "avg") -> Role:
    return Role(ROLE_AVG_READER, _read(f"{avg_prefix}/#"), "free moving averages")


NOTIFY_ROLE_PREFIX = "notify."


def notify_role(username: str) -> Role:
    # One role per buyer: Mosquitto 2.0's dynamic security has no %u substitution (2.1 has).
    return Role(
        f"{NOTIFY_ROLE_PREFIX}{username}",
        _read(notify_topic(username)),
        f"notifications of {username} only",
    )


def notifier_role() -> Role:
    return Role(
        ROLE_NOTIFIER,
        (
            Acl("publishClientSend", f"{NOTIFY_PREFIX}/#"),
            Acl("publishClientSend", f"{INFO_PREFIX}/#"),
        ),
        "broker_auth's notifier: buyers' notifications and the shop's public facts only",
    )


def metrics_role() -> Role:
    return Role(
        ROLE_METRICS,
        _read("$SYS/broker/#"),
        "iot-broker-metrics: reads the broker's $SYS figures only",
    )


def info_reader_role() -> Role:
    return Role(ROLE_INFO_READER, _read(f"{INFO_PREFIX}/#"), "the shop's public facts")


def notify_topic(username: str) -> str:
    return f"{NOTIFY_PREFIX}/{username}"


def static_roles(live_prefix: str = "live", avg_prefix: str = "avg") -> list[Role]:
    return [
        admin_role(),
        ingest_role(live_prefix, avg_prefix),
        avg_reader_role(avg_prefix),
        info_reader_role(),
        notifier_role(),
        metrics_role(),
    ]


def static_groups() -> list[Group]:
    free = (ROLE_AVG_READER, ROLE_INFO_READER)
    return [Group(ANONYMOUS_GROUP, free), Group(BUYERS_GROUP, free)]


def device_username(device_id: str) -> str:
    return f"device.{device_id}"


def device_role(device_id: str, live_prefix: str = "live") -> Role:
    return Role(
        f"device.{device_id}",
        (Acl("publishClientSend", f"{live_prefix}/{device_id}/#"),),
        f"device {device_id}: publishes its own readings only",
    )


def product_role(product_id: str, topic_filter: str) -> Role:
    return Role(f"product.{product_id}", _read(topic_filter), f"paid live access: {product_id}")
