"""Prometheus metrics of broker_auth, served at GET /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pymongo.errors import PyMongoError

HTTP_REQUESTS = Counter(
    "broker_auth_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram("broker_auth_http_request_seconds", "HTTP request duration", ["route"])
AUTH_FAILURES = Counter("broker_auth_auth_failures_total", "Rejected credentials", ["kind"])
THROTTLED = Counter("broker_auth_throttled_total", "Requests refused by a rate limit", ["kind"])

PAYMENTS_CONFIRMED = Counter(
    "broker_auth_payments_confirmed_total", "Payments that became confirmed", ["matched"]
)
PAYMENT_IOTA = Counter("broker_auth_payment_iota_total", "Sum of payment amounts", ["status"])
REFUND_DUE_IOTA = Counter(
    "broker_auth_refund_due_iota_total",
    "Value beyond an order's amount that bought nothing (product off sale)",
)
CREDITS = Counter("broker_auth_credits_total", "Confirmed payments credited to a grant")
GRANT_EVENTS = Counter("broker_auth_grant_events_total", "Grant changes", ["event"])
OUTBOX_WRITTEN = Counter(
    "broker_auth_outbox_written_total", "Confirmed-payment points delivered to the store"
)
NOTIFICATIONS = Counter(
    "broker_auth_notifications_total", "Notifications published to buyers", ["event"]
)
GRANTS_ACTIVE = Gauge("broker_auth_grants_active", "Active grants")
GRANT_APPLY_SECONDS = Histogram(
    "broker_auth_grant_apply_seconds",
    "From the watcher seeing a confirmation to the role being in Mosquitto",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
REVOKE_LAG_SECONDS = Histogram(
    "broker_auth_revoke_lag_seconds",
    "From a grant's end to its role being removed in Mosquitto",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)

STORE_COMMAND_SECONDS = Histogram(
    "broker_auth_store_command_seconds",
    "MongoDB commands by name and collection (the whole round trip)",
    ["command", "collection"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 6.0),
)


class DepositAddressGauge(Collector):
    """`broker_auth_deposit_addresses{state}`, counted when Prometheus asks (the pool's counts
    are cached: billing/pool_counts.py), not after every hand-out. While the store does not
    answer, the last counts (so DepositPoolEmpty does not resolve during an outage)."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, int]] | None = None  # set by the service
        self._last: dict[str, int] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "broker_auth_deposit_addresses",
            "Deposit addresses of the pool by state",
            labels=["state"],
        )
        try:
            if self.source is not None:
                self._last = self.source()
        except PyMongoError:
            pass  # the last counts; broker_auth_mongo_up says the store is down
        for state, n in sorted(self._last.items()):
            family.add_metric([state], n)
        yield family


DEPOSIT_ADDRESSES = DepositAddressGauge()
REGISTRY.register(DEPOSIT_ADDRESSES)
WATCHED_ADDRESSES = Gauge("broker_auth_watched_addresses", "Addresses the watcher polls")
WATCHER_POLLS = Counter("broker_auth_watcher_polls_total", "Watcher polls", ["result"])
WATCHER_POLL_SECONDS = Histogram("broker_auth_watcher_poll_seconds", "Watcher poll duration")
LEASE_HELD = Gauge(
    "broker_auth_lease_held", "1 while this replica holds the payments lease (runs the watcher)"
)
NODE_UP = Gauge("broker_auth_node_up", "1 if the IOTA node answered the last poll")
NODE_FEED_EVENTS = Counter(
    "broker_auth_node_feed_events_total", "Events received from the node's ZMQ feed", ["topic"]
)
BROKER_UP = Gauge("broker_auth_broker_up", "1 if the control client is connected")
MONGO_UP = Gauge("broker_auth_mongo_up", "1 if MongoDB answered the last health check")

DYNSEC_COMMANDS = Counter(
    "broker_auth_dynsec_commands_total", "Dynamic-security commands sent", ["result"]
)
RECONCILES = Counter("broker_auth_reconcile_total", "Reconciliation runs", ["result"])
RECONCILE_CHANGES = Counter(
    "broker_auth_reconcile_changes_total", "Changes made to Mosquitto by reconciliation"
)

EVENTS_WRITTEN = Counter("broker_auth_events_written_total", "Business points written")
EVENTS_DROPPED = Counter(
    "broker_auth_events_dropped_total", "Business points dropped (buffer full)"
)
