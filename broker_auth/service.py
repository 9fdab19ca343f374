"""The composition root: builds every part of broker_auth from Settings, starts and stops
the background threads (control client, reconciler, payment watcher, the node's event feed,
expiry, the outbox drainer, events).

One small builder per part, grouped by role (infrastructure, the broker, accounts, access,
billing); `Runtime` wires them, passing each callback at construction.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pymongo

from broker_auth.access.expiry import ExpiryScheduler
from broker_auth.access.grants import Grants
from broker_auth.access.instant_access import Limits
from broker_auth.access.notices import Notifier, notifier_password
from broker_auth.access.provisional import ProvisionalGrants
from broker_auth.accounts import passwords
from broker_auth.accounts.buyers import Accounts
from broker_auth.accounts.sessions import Sessions
from broker_auth.accounts.throttle import SlidingWindow, purge_expired
from broker_auth.billing.cancels import CancelRequests
from broker_auth.billing.instant_review import InstantAccess
from broker_auth.billing.orders import Orders
from broker_auth.billing.outbox import Outbox, OutboxDrainer
from broker_auth.billing.payments import Payments
from broker_auth.billing.pool import DepositAddresses
from broker_auth.billing.pool_counts import COUNTS_MAX_AGE_S
from broker_auth.billing.revenue import Revenue
from broker_auth.billing.watcher import Watcher
from broker_auth.broker.control import DynsecClient
from broker_auth.broker.metrics_account import MetricsAccount
from broker_auth.broker.projector import Projector
from broker_auth.broker.reconciler import Reconciler
from broker_auth.catalog.demo import DEMO_DEVICE, seed_demo
from broker_auth.catalog.devices import Devices
from broker_auth.catalog.last_readings import LastReadings
from broker_auth.catalog.products import Products
from broker_auth.errors import UnavailableError
from broker_auth.infra import metrics
from broker_auth.infra.db import Store
from broker_auth.infra.events import EventWriter
from broker_auth.infra.leader import Leader, PaymentsLease
from broker_auth.ledger.feed import NodeFeed
from broker_auth.ledger.iri import IriLedger
from broker_auth.schemas import SellerKeyOut
from broker_auth.sealed.claims import SealedClaims
from broker_auth.sealed.keys import ALG, SellerKeys
from broker_auth.settings import Settings

log = logging.getLogger(__name__)

BROKER_STARTUP_WAIT_S = 10.0
SCRAPE_STORE_TIMEOUT_S = 2.0


def resolve_admin_token(settings: Settings) -> str:
    """The configured token; in dev mode without one, a random token saved to a 0600 file."""
    if settings.admin_token and settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    path = Path(settings.admin_token_file)
    if path.exists():
        token = path.read_text().strip()
        if token:
            log.warning("dev mode: admin token read from %s", path.resolve())
            return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    log.warning("dev mode: generated an admin token, saved in %s", path.resolve())
    return token


def demo_device_password(s: Settings) -> str | None:
    """The demo device's password when the demo is seeded (SEED_DEMO), else None."""
    if s.seed_demo and s.demo_device_password:
        return s.demo_device_password.get_secret_value()
    return None


# -- infrastructure: the store, the time-series store ----------------------------------------
def build_store(s: Settings) -> Store:
    return Store(s.mongo_url, s.mongo_db, s.mongo_timeout_s)


def build_events(s: Settings) -> EventWriter:
    token = s.influx_token.get_secret_value()
    return EventWriter(s.influx_url, token, s.influx_org, s.influx_bucket, capacity=s.events_buffer)


def build_last_readings(s: Settings) -> LastReadings:
    token = s.influx_read_token.get_secret_value() or s.influx_token.get_secret_value()
    return LastReadings(s.influx_url, token, s.influx_org, s.influx_bucket, timeout_s=5.0)


def build_outbox_drainer(outbox: Outbox, s: Settings, leader: Leader) -> OutboxDrainer:
    token = s.influx_token.get_secret_value()
    return OutboxDrainer(outbox, s.influx_url, token, s.influx_org, s.influx_bucket, leader=leader)


# -- the broker: its control client and the projection of grants onto it ------------------
def build_dynsec(s: Settings, on_ready: Callable[[], None]) -> DynsecClient:
    return DynsecClient(
        s.mqtt_host,
        s.mqtt_port,
        s.dynsec_admin_username,
        s.dynsec_admin_password.get_secret_value(),
        timeout_s=s.dynsec_timeout_s,
        on_ready=on_ready,
    )


def build_projector(store: Store, dynsec: DynsecClient, s: Settings, leader: Leader) -> Projector:
    demo_password = demo_device_password(s)
    known = {DEMO_DEVICE: demo_password} if demo_password else None
    return Projector(
        store, dynsec, s.live_topic_prefix, known_device_passwords=known, leader=leader
    )


def build_reconciler(
    projector: Projector,
    grants: Grants,
    events: EventWriter,
    s: Settings,
    before_first: Callable[[], None],
) -> Reconciler:
    return Reconciler(
        projector,
        grants.active_counts,
        events,
        s.reconcile_interval_s,
        s.grants_active_interval_s,
        before_first=before_first,
    )


# -- billing: the ledger, the pool, orders, payments and the watcher ------------------------
def build_notifier(s: Settings, projector: Projector) -> tuple[SellerKeys, Notifier]:
    """The seller's keys (sealed purchases) and the notifier that also keeps them retained."""
    keys = SellerKeys.load_or_create(Path(s.seller_key_file))
    password = notifier_password(s.dynsec_admin_password.get_secret_value())
    notifier = Notifier(projector, s.mqtt_host, s.mqtt_port, password, public_facts(keys))
    return keys, notifier


def build_metrics_account(s: Settings, projector: Projector) -> MetricsAccount:
    """The $SYS exporter's client when the exporter runs (its password is given), else its
    removal."""
    password = s.broker_metrics_mqtt_password
    return MetricsAccount(projector, password.get_secret_value() if password else None)


def public_facts(keys: SellerKeys) -> dict[str, str]:
    """What the notifier keeps retained under `info/` (anonymous clients may read it)."""
    return {
        "info/seller-key": SellerKeyOut(public_key=keys.public_key_b64, alg=ALG).model_dump_json()
    }


def build_grants(
    store: Store,
    projector: Projector,
    events: EventWriter,
    notifier: Notifier,
    on_change: Callable[[], None],
) -> tuple[ProvisionalGrants, Grants]:
    provisional = ProvisionalGrants(store, projector, notify=notifier.send, on_change=on_change)
    grants = Grants(
        store, projector, events, on_change=on_change, notify=notifier.send, provisional=provisional
    )
    return provisional, grants


def build_orders(store: Store, pool: DepositAddresses, ledger: IriLedger, s: Settings) -> Orders:
    return Orders(
        store,
        pool,
        ledger,
        s.order_payment_window_s,
        s.max_order_hours,
        s.unpaid_hold_s,
        s.max_unpaid_orders,
        s.late_payment_window_s,
        s.min_order_iota,
        s.max_unpaid_quotes,
    )


def build_payments(store: Store, events: EventWriter, outbox: Outbox, s: Settings) -> Payments:
    return Payments(store, events, outbox, late_payment_window_s=s.late_payment_window_s)


def build_watcher(
    store: Store,
    ledger: IriLedger,
    pool: DepositAddresses,
    payments: Payments,
    grants: Grants,
    orders: Orders,
    s: Settings,
    before_poll: Callable[[], bool],
    instant: InstantAccess,
    sealed: SealedClaims,
    cancels: CancelRequests,
) -> Watcher:
    return Watcher(
        store,
        ledger,
        pool,
        payments,
        grants,
        orders,
        interval_s=s.watcher_interval_s,
        max_backoff_s=s.watcher_max_backoff_s,
        stray_scan_interval_s=s.stray_scan_interval_s,
        before_poll=before_poll,
        instant=instant,
        sealed=sealed,
        cancels=cancels,
    )


def instant_access_limits(s: Settings) -> Limits:
    return Limits(
        max_seconds=s.instant_access_max_s,
        max_iota=s.instant_access_max_iota,
        confirm_s=s.instant_access_confirm_s,
    )


def build_node_feed(s: Settings, watcher: Watcher) -> NodeFeed | None:
    """The node's event feed, when configured: a new solid milestone wakes the watcher, and
    with instant access on so does a transaction paying a waiting order."""
    if not s.iota_node_zmq_url:
        return None
    instant = s.instant_access_max_s > 0 and s.instant_access_max_iota > 0
    return NodeFeed(
        s.iota_node_zmq_url,
        on_milestone=watcher.milestone_announced,
        on_payment=watcher.payment_announced if instant else None,
    )


# -- accounts: the throttles of logins, sign-ups and orders ----------------------------------
@dataclass(frozen=True)
class Throttles:
    """The sliding windows that refuse or slow repeated attempts, kept in MongoDB."""

    login_by_pair: SlidingWindow
    login_by_ip: SlidingWindow
    login_by_user: SlidingWindow
    signups_by_ip: SlidingWindow
    orders_by_buyer: SlidingWindow
    orders_by_ip: SlidingWindow

    @classmethod
    def build(cls, store: Store, s: Settings) -> Throttles:
        def window(name: str, limit: int, window_s: float) -> SlidingWindow:
            return SlidingWindow(store.throttles, name, limit, window_s)

        return cls(
            login_by_pair=window("login_pair", s.login_max_failures, s.login_window_s),
            login_by_ip=window("login_ip", s.login_max_failures_per_ip, s.login_window_s),
            login_by_user=window("login_user", s.login_slow_after, s.login_window_s),
            signups_by_ip=window("signup_ip", s.signup_max_per_ip, s.signup_window_s),
            orders_by_buyer=window("order_buyer", s.order_max_per_buyer, s.order_window_s),
            orders_by_ip=window("order_ip", s.order_max_per_ip, s.order_window_s),
        )


class Runtime:
    """Every part of broker_auth, built from Settings, grouped by role; started and stopped
    together. Callbacks between parts are passed at construction (bound methods below)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        self.admin_token = resolve_admin_token(s)
        self._file_load_warned = False
        self._address_file_done = False
        # Infrastructure.
        self.store = build_store(s)
        # One replica at a time runs the background roles and writes grants to the broker.
        self.lease = PaymentsLease(
            self.store,
            s.lease_ttl_s,
            s.lease_safety_s,
            on_gained=self._lease_gained,
            housekeeping=self._purge_throttles,
        )
        self.leader = Leader(self.lease)
        self.events = build_events(s)
        self.last_readings = build_last_readings(s)
        self.outbox = Outbox(self.store)
        self.outbox_drainer = build_outbox_drainer(self.outbox, s, self.leader)
        # The broker.
        self.dynsec = build_dynsec(s, on_ready=self._broker_ready)
        self.projector = build_projector(self.store, self.dynsec, s, self.leader)
        self.seller_keys, self.notifier = build_notifier(s, self.projector)
        self.metrics_account = build_metrics_account(s, self.projector)
        # Accounts and the catalog.
        self.accounts = Accounts(self.store, self.projector)
        self.sessions = Sessions(self.store, s.session_ttl_s)
        self.throttles = Throttles.build(self.store, s)
        self.devices = Devices(self.store, self.projector)
        self.products = Products(self.store, self.projector, s.live_topic_prefix)
        # Access: grants, provisional access and their expiry.
        self.provisional, self.grants = build_grants(
            self.store, self.projector, self.events, self.notifier, self._grants_changed
        )
        self.expiry = ExpiryScheduler(self.grants, s.grant_ending_notice_s)
        self.reconciler = build_reconciler(
            self.projector, self.grants, self.events, s, before_first=self._seed
        )
        # Billing.
        self.ledger = IriLedger(s.iota_node_url, timeout_s=s.node_timeout_s)
        self.pool = DepositAddresses(self.store, self.ledger, s.deposit_pool_low_water)
        metrics.DEPOSIT_ADDRESSES.source = self._pool_counts_for_scrape
        self.orders = build_orders(self.store, self.pool, self.ledger, s)
        self.orders.leads = self.leader.leads
        # Asked here, carried out by the leader's watcher (woken at once if it is this one).
        self.cancels = CancelRequests(self.store, wake=lambda: self.watcher.wake())
        self.payments = build_payments(self.store, self.events, self.outbox, s)
        self.revenue = Revenue(self.store)
        self.watcher = build_watcher(
            self.store,
            self.ledger,
            self.pool,
            self.payments,
            self.grants,
            self.orders,
            s,
            before_poll=self._addresses_loaded,
            instant=InstantAccess(
                self.store, self.ledger, self.provisional, instant_access_limits(s)
            ),
            sealed=SealedClaims(self.store, self.ledger, self.seller_keys, self.accounts),
            cancels=self.cancels,
        )
        self.node_feed = build_node_feed(s, self.watcher)
        # Warm the KDF once so the first login does not pay for imports and allocation.
        passwords.burn_time("warm-up")

    def _grants_changed(self) -> None:
        # A new or longer grant may end before the one the scheduler is sleeping towards.
        self.expiry.wake()

    def _seed(self) -> None:
        """Before the first reconciliation: old shared passwords moved, the demo seeded."""
        self.accounts.migrate_shared_passwords()
        demo_password = demo_device_password(self.settings)
        if demo_password:
            seed_demo(self.devices, self.products, demo_password, self.settings.live_topic_prefix)

    def _purge_throttles(self) -> None:
        purge_expired(self.store.throttles)

    def _lease_gained(self) -> None:
        # Bring the broker in line with MongoDB first: the last holder may have died mid-way.
        self.reconciler.trigger()
        if self.watcher.instant is not None:
            self.watcher.instant.lease_gained()
        self.watcher.wake()
        self.expiry.wake()

    def _broker_ready(self) -> None:
        # Called from paho's thread on every (re)connection: reconcile in our own thread.
        self.reconciler.trigger()

    def _addresses_loaded(self) -> bool:
        if not self._address_file_done:
            self._address_file_done = self.load_address_file()
        return self._address_file_done

    def load_address_file(self) -> bool:
        """IOTA_DEPOSIT_ADDRESSES_FILE, read at start (known addresses are skipped).

        Loading asks the node which addresses were spent from; while it cannot answer, the
        watcher calls this again before each poll. Returns whether it is done.
        """
        path = self.settings.iota_deposit_addresses_file
        if not path:
            return True
        lines = Path(path).read_text().splitlines()
        addresses = [x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")]
        try:
            result = self.pool.load(addresses)
        except UnavailableError:
            if not self._file_load_warned:
                log.warning("IOTA node unreachable: %s will be loaded once it answers", path)
                self._file_load_warned = True
            return False
        log.info(
            "deposit addresses from %s: %d added, %d already known, %d refused",
            path,
            result.added,
            result.already_known,
            len(result.refused),
        )
        for refused in result.refused[:20]:
            log.warning("deposit address refused: %s (%s)", refused["address"], refused["reason"])
        return True

    def _pool_counts_for_scrape(self) -> dict[str, int]:
        # A scrape must answer within its timeout: a loaded store gets 2 s, then the last counts.
        with pymongo.timeout(SCRAPE_STORE_TIMEOUT_S):
            return self.pool.counts(COUNTS_MAX_AGE_S)

    def _prepare_store(self) -> None:
        """What the store must hold before serving (retried by `wait_ready` until it does)."""
        self.pool.migrate_queue()
        self.orders.migrate_records()
        self._addresses_loaded()  # else the watcher tries again before each poll
        self.pool.counts()

    def start(self) -> None:
        self.store.wait_ready(then=self._prepare_store)
        self.events.start()
        self.outbox_drainer.start()
        self.dynsec.start()
        if not self.dynsec.wait_ready(BROKER_STARTUP_WAIT_S):
            log.warning(
                "broker %s:%s not reachable yet; serving anyway and reconciling once it is",
                self.settings.mqtt_host,
                self.settings.mqtt_port,
            )
        self.lease.try_once_safely()
        self.lease.start()
        self.reconciler.start()
        self.notifier.start()
        self.metrics_account.start()
        self.expiry.start()
        self.watcher.start()
        if self.node_feed is not None:
            self.node_feed.start()
        log.info("broker_auth started")

    def stop(self) -> None:
        if self.node_feed is not None:
            self.node_feed.stop()
        self.watcher.stop()
        self.expiry.stop()
        self.notifier.stop()
        self.metrics_account.stop()
        self.reconciler.stop()
        self.lease.stop()  # released once the roles are stopped
        self.dynsec.stop()
        self.events.stop()
        self.outbox_drainer.stop()
        self.last_readings.close()
        self.store.close()
        log.info("broker_auth stopped")
