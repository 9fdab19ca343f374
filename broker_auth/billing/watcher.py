"""Payment watcher: the confirmed ledger value of every watched deposit address, credited once.

The money path, in the order a payment takes it: the ledger (ledger/) → this watcher → the
payment record (payments.py) → the order's record (orders.py, order_record.py) → the price
(pricing.py) → the grant (access/grants.py) → the broker (broker/projector.py). The watcher
reads the ledger and hands what it found to the others; it keeps no record of its own.

One poll:
1. the watch list (watch_list.py: one entry per address an order holds while its window is
   open), the confirmed balances of the "hot" ones (paid orders, and unpaid ones inside their
   payment window) from the ledger in batches, and each increase over what was accounted
   recorded as a payment, given to its order as an event, priced and credited to the grant;
2. for orders still waiting for their first confirmation, the valid pending bundles paying
   them that can still confirm (an event for the order: `paid_iota`, never credited);
3. addresses whose window has passed are closed (the seller may sweep them), or, for an order
   never paid, go back to the pool's free queue; either way the order hears its window closed.
The work of a poll is bounded by the watched orders: it reads the watch list and documents by
`_id` only, never the pool, the payments or the tangle's history. At start and then every
`stray_scan_interval_s` a maintenance pass credits what a crash left uncredited, reads the
unpaid orders past their payment window (held UNPAID_HOLD_S: a payment there still counts,
seen within that interval) and the addresses no watched order holds (free or closed, not
swept): value on them is kept as unmatched.
The bundles that paid are evidence for people, looked up after the amount: when the node
cannot name them yet (just restarted, still syncing) the payment is recorded without them and
the lookup is retried with backoff until it succeeds or EVIDENCE_GIVE_UP_S has passed.
When the node is down the watcher retries with exponential backoff; balances are cumulative,
so nothing is missed meanwhile.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pymongo.errors import PyMongoError

from broker_auth.access.grants import Grants
from broker_auth.billing.cancels import CancelRequests
from broker_auth.billing.instant_review import InstantAccess
from broker_auth.billing.orders import LeaseLostError, Orders
from broker_auth.billing.payments import Payments
from broker_auth.billing.pool import DepositAddresses
from broker_auth.infra import metrics
from broker_auth.infra.background import BackgroundWorker
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger import BundleSeen, Ledger
from broker_auth.ledger.feed import MilestoneNews
from broker_auth.sealed.claims import SealedClaims, Waiting
from broker_auth.sealed.message import Refused

log = logging.getLogger(__name__)

EVIDENCE_GIVE_UP_S = 24 * 3600.0
EVIDENCE_MAX_BACKOFF_S = 10.0
EVIDENCE_PER_POLL = 20  # lookups a poll spends on backfill, so a backlog cannot stall it
# The feed announced a milestone the balances did not show yet: poll again soon, this many
# times at most per announcement taken (MilestoneNews takes an index only once, and only a
# few milestones ahead of the ledger's answer, so a foreign or flooding feed cannot make the
# watcher poll in a loop).
BEHIND_FEED_PAUSE_S = 0.05
BEHIND_FEED_POLLS = 20
# The feed's `tx` events to a watched address wake the watcher at most this often (anyone may
# attach transactions to an order's address, valid or not).
TX_WAKE_GAP_S = 0.1
MIN_PAUSE_S = 0.02  # the shortest pause between two polls (a retry falling due at once)
CLAIM_MAX_BACKOFF_S = 30.0  # a sealed purchase not decided yet is asked again at least this often


@dataclass
class _MissingEvidence:
    address: str
    first_try: float
    next_try: float
    backoff: float


class Watcher(BackgroundWorker):
    join_timeout_s = 15.0

    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        pool: DepositAddresses,
        payments: Payments,
        grants: Grants,
        orders: Orders,
        interval_s: float = 0.5,
        max_backoff_s: float = 10.0,
        stray_scan_interval_s: float = 30.0,
        before_poll: Callable[[], bool] | None = None,
        instant: InstantAccess | None = None,
        sealed: SealedClaims | None = None,
        cancels: CancelRequests | None = None,
    ) -> None:
        super().__init__("watcher")
        self.sealed = sealed
        self.cancels = cancels  # buyers' cancels: carried out here, the orders' one writer
        self.instant = instant
        self.store = store
        self.ledger = ledger
        self.pool = pool
        self.payments = payments
        self.grants = grants
        self.orders = orders
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.stray_scan_interval_s = stray_scan_interval_s
        self.node_ok = False
        self.last_ok: float | None = None
        self._node_warned = False
        self._store_warned = False
        self._next_maintenance = 0.0
        self._retry: dict[str, Doc] = {}  # payments whose credit failed in this process
        self._drops_warned: set[str] = set()
        self._missing_evidence: dict[str, _MissingEvidence] = {}  # payment id -> retry state
        self._evidence_loaded = False
        # Sealed purchases not decided yet: payment id -> (next try, backoff).
        self._claims_waiting: dict[str, tuple[float, float]] = {}
        # Work that waits for the node (loading the address file); done once it returns True.
        self.before_poll = before_poll
        # What the node's event feed announced (ledger/feed.py), and whether the last
        # balances read were older: then the next poll comes at once.
        self.milestones = MilestoneNews()
        self._waiting: frozenset[str] = frozenset()  # addresses the last poll asked about
        self._last_tx_wake = 0.0
        self._behind_feed = False
        self._quick_polls = 0

    def _run(self) -> None:
        backoff = self.interval_s
        while not self.stopping:
            if not self.grants.leader.leads():
                self._standby_check()
                continue
            started = time.monotonic()
            try:
                self.poll_once()
            except LeaseLostError:
                log.info("watcher: the payments lease was lost during a poll; standing by")
            except PyMongoError as exc:
                metrics.WATCHER_POLLS.labels("store_error").inc()
                if not self._store_warned:
                    log.warning("watcher: MongoDB unavailable (%s); retrying", type(exc).__name__)
                    self._store_warned = True
                backoff = min(backoff * 2, self.max_backoff_s)
            except Exception as exc:  # node down, timeouts, malformed answers
                metrics.WATCHER_POLLS.labels("node_error").inc()
                if not self._node_warned:
                    log.warning("watcher: IOTA node unavailable (%s); retrying with backoff", exc)
                    self._node_warned = True
                self.node_ok = False
                metrics.NODE_UP.set(0)
                backoff = min(backoff * 2, self.max_backoff_s)
            else:
                metrics.WATCHER_POLLS.labels("ok").inc()
                self._store_warned = False
                backoff = self.interval_s
            metrics.WATCHER_POLL_SECONDS.observe(time.monotonic() - started)
            pause = backoff
            # Quick re-polls only after a good poll: a failing node keeps its backoff.
            if backoff == self.interval_s and self._behind_feed and self._quick_polls > 0:
                self._quick_polls -= 1
                pause = BEHIND_FEED_PAUSE_S
            elif backoff == self.interval_s and self._waiting:
                # A payment arriving (its bundle incomplete, or not solid yet): look again
                # when the ledger can tell, not a whole interval later.
                due = self.ledger.next_look_s()
                if due is not None:
                    pause = min(pause, max(MIN_PAUSE_S, due))
            self._pause(pause)

    def _standby_check(self) -> None:
        """Another replica watches: only keep /healthz's node state true."""
        try:
            self.ledger.ledger_index()
        except Exception:
            self.node_ok = False
            metrics.NODE_UP.set(0)
        else:
            self._node_answered()
        self._pause(self.interval_s)

    def _node_answered(self) -> None:
        if not self.node_ok:
            log.info("watcher: IOTA node reachable")
        self._node_warned = False
        self.node_ok = True
        self.last_ok = time.monotonic()
        metrics.NODE_UP.set(1)

    def milestone_announced(self, index: int) -> None:
        """The node's feed says milestone `index` is solid: poll now (from the feed's thread),
        if that is news (see MilestoneNews) and the node was answering."""
        if not self.milestones.announce(index):
            return
        self._quick_polls = BEHIND_FEED_POLLS
        if self.node_ok:
            self.wake()

    def payment_announced(self, address: str) -> None:
        """The node's feed saw a transaction with value to `address` (from the feed's thread):
        poll now if it pays a waiting order; at most every TX_WAKE_GAP_S."""
        if address not in self._waiting or not self.node_ok:
            return
        now = time.monotonic()
        if now - self._last_tx_wake >= TX_WAKE_GAP_S:
            self._last_tx_wake = now
            self.wake()

    # -- one poll --------------------------------------------------------------------------
    def poll_once(self) -> None:
        if self.before_poll is not None and self.before_poll():
            self.before_poll = None
        if self.instant is not None:
            self.instant.repair_once()
        if self.cancels is not None:
            self.cancels.serve(self.orders.cancel, self.grants.leader.leads)
        watched = self.pool.watched()
        metrics.WATCHED_ADDRESSES.set(len(watched))
        maintenance = time.monotonic() >= self._next_maintenance
        now = utcnow()
        hot = [d for d in watched if _hot(d, now)]
        if hot:
            self._credit_increases(hot)
            asked, seen = self._show_pending(hot)
            if self.instant is not None and asked:
                self.instant.review(asked, seen)
        else:
            # Still tells whether the node answers, and where its ledger stands.
            self._behind_feed = self.milestones.ledger_read(self.ledger.ledger_index())
            self._node_answered()
        if maintenance:
            cold = [d for d in watched if not _hot(d, now)]
            if cold:
                self._credit_increases(cold)
                # Past their window and not paid: the records say so (the view did already).
                self.orders.expire(str(d["order_id"]) for d in cold if d.get("order_id"))
        # Never-paid addresses go back to the pool only in the pass that just read them.
        self._close_ended(watched, release=maintenance)
        for payment in list(self._retry.values()):
            self._credit(payment, None)
        if maintenance:
            self.pool.finish_releases()
            for payment in self.payments.to_credit():
                self._credit(payment, None)
            if not self._evidence_loaded:  # what an earlier process recorded without evidence
                for payment in self.payments.without_evidence():
                    self._evidence_later(payment)
                self._evidence_loaded = True
            self.scan_strays()
            if self.cancels is not None:
                self.cancels.tidy()
            if self.instant is not None:
                self.instant.provisional.finish_moves()
            self._next_maintenance = time.monotonic() + self.stray_scan_interval_s
        self._backfill_evidence()

    def _credit_increases(self, watched: list[Doc]) -> None:
        balances = self.ledger.confirmed_balances([str(d["_id"]) for d in watched])
        self._node_answered()
        self._behind_feed = self.milestones.ledger_read(balances.ledger_index)
        seen_at = time.monotonic()
        for doc in watched:
            address = str(doc["_id"])
            balance = balances.values.get(address, 0)
            accounted = int(doc.get("accounted_iota", 0))
            if balance < accounted and address not in self._drops_warned:
                # Spent from outside the sweep: nothing is credited until it exceeds `accounted`.
                log.warning(
                    "watched address %s holds %d iota, %d were accounted: it was spent from",
                    address,
                    balance,
                    accounted,
                )
                self._drops_warned.add(address)
            if balance <= accounted:
                continue
            order = self.orders.find(str(doc["order_id"])) if doc.get("order_id") else None
            bundles = self._evidence(address, {str(b) for b in doc.get("bundles", [])})
            payment = self.payments.record_increase(
                doc, balance, balances.ledger_index, order, bundles, self.pool.watch
            )
            if payment is None:
                continue
            self._evidence_later(payment)
            self.pool.watch.add_bundles(address, payment["bundles"])
            self.pool.mirror_accounted(address, int(payment["to_iota"]))
            if order is not None:
                self._credit(payment, seen_at)

    def _evidence(self, address: str, named: set[str]) -> list[str]:
        """Confirmed bundles to the address not named by an earlier payment of it."""
        try:
            seen = self.ledger.bundles_paying([address], recheck_dropped=True)
        except Exception as exc:  # evidence is for people: the amount stands without it
            log.warning("watcher: no bundle evidence for %s (%s)", address, exc)
            return []
        return sorted({b.bundle_hash for b in seen if b.confirmed} - named)

    def _evidence_later(self, payment: Doc) -> None:
        if not payment.get("bundles") and str(payment["_id"]) not in self._missing_evidence:
            now = time.monotonic()
            self._missing_evidence[str(payment["_id"])] = _MissingEvidence(
                str(payment["address"]), now, now + self.interval_s, self.interval_s
            )

    def _backfill_evidence(self) -> None:
        now = time.monotonic()
        due = [(pid, m) for pid, m in self._missing_evidence.items() if m.next_try <= now]
        for pid, missing in due[:EVIDENCE_PER_POLL]:
            bundles = self._evidence(missing.address, self.payments.bundles_of(missing.address))
            if bundles:
                self.payments.add_evidence(pid, bundles)
                self.pool.watch.add_bundles(missing.address, bundles)
                log.info("payment %s: paid by bundles %s", pid, ",".join(bundles))
                del self._missing_evidence[pid]
            elif now - missing.first_try > EVIDENCE_GIVE_UP_S:
                log.warning("payment %s: no confirmed bundle names it; kept without", pid)
                del self._missing_evidence[pid]
            else:
                missing.backoff = min(missing.backoff * 2, EVIDENCE_MAX_BACKOFF_S)
                missing.next_try = now + missing.backoff

    def _credit(self, payment: Doc, seen_at: float | None) -> None:
        pid = str(payment["_id"])
        self._retry[pid] = payment  # until the credit is through (it is idempotent)
        # The order first: a crash before the grant's credit applies it again (idempotent).
        self.orders.payment_confirmed(str(payment["order_id"]), payment)
        if payment.get("username") is None:  # a quote's: its buyer is in the sealed message
            claimed = self._claim_sealed(payment)
            if claimed is None:
                return
            payment = claimed
        payment = self.payments.priced(payment)
        self.grants.credit(payment, confirmed_seen_at=seen_at)
        del self._retry[pid]
        # Keep watching the address while the grant it paid for runs.
        ends_at = self.grants.ends_at(str(payment["username"]), str(payment["product_id"]))
        if ends_at is not None:
            self.pool.extend_watch(str(payment["address"]), ends_at)

    def _claim_sealed(self, payment: Doc) -> Doc | None:
        """The payment with the buyer its sealed message names; None if it is refused (kept
        unmatched with the reason) or not decided yet (asked again, backing off)."""
        pid, order_id = str(payment["_id"]), str(payment["order_id"])
        waiting = self._claims_waiting.get(pid)
        if waiting is not None and time.monotonic() < waiting[0]:
            return None
        order = self.orders.find(order_id)
        if order is None or self.sealed is None:
            why = "the quote is gone" if order is None else "this watcher opens no sealed message"
            self.payments.keep_unmatched(payment, f"no buyer: {why}")
            del self._retry[pid]
            return None
        fresh = self.payments.find(pid) or payment  # the evidence may have come since
        try:
            claim = self.sealed.claim(order, fresh)
        except Exception as exc:  # the broker or the node: ask again later, never stall
            claim = Waiting()
            if waiting is None:
                log.warning("quote %s: its sealed buyer waits (%s)", order_id, exc)
        if isinstance(claim, Waiting):
            backoff = min(2 * waiting[1], CLAIM_MAX_BACKOFF_S) if waiting else self.interval_s
            self._claims_waiting[pid] = (time.monotonic() + backoff, backoff)
            if claim.why is not None and waiting is None:
                log.warning("quote %s, payment %s: %s", order_id, pid, claim.why)
            return None
        self._claims_waiting.pop(pid, None)
        if isinstance(claim, Refused):
            self.payments.keep_unmatched(fresh, claim.reason)
            self.orders.sealed_refused(order_id, claim.reason)
            del self._retry[pid]
            return None
        return self.payments.assign_buyer(pid, claim.username)

    def _show_pending(self, watched: list[Doc]) -> tuple[list[Doc], list[BundleSeen]]:
        """Show pending value on the orders; the entries asked about and what the ledger saw."""
        now = utcnow()
        # Orders not paid yet and still in their payment window, and any address still
        # showing pending value (it drops to 0 once that bundle confirms or leaves).
        waiting = [
            d
            for d in watched
            if int(d.get("pending_iota", 0)) > 0
            or (
                not _paid(d)
                and d.get("order_expires_at") is not None
                and as_utc(d["order_expires_at"]) > now
            )
        ]
        self._waiting = frozenset(str(d["_id"]) for d in waiting)
        if not waiting:
            return [], []
        pending: dict[str, int] = {}
        confirmed: dict[str, int] = {}
        bundles = self.ledger.bundles_paying([str(d["_id"]) for d in waiting])
        for seen in bundles:
            into = confirmed if seen.confirmed else pending
            into[seen.address] = into.get(seen.address, 0) + seen.value
        for doc in waiting:
            address = str(doc["_id"])
            value = pending.get(address, 0)
            before = int(doc.get("pending_iota", 0))
            # Confirmed by inclusion state, which runs a milestone ahead of the ledger's
            # balances: the order shows it as paid meanwhile, so it never steps back.
            seen_confirmed = confirmed.get(address, 0)
            if value == before and seen_confirmed == int(doc.get("confirmed_seen_iota", 0)):
                continue
            # The order first: if its write fails the watch entry still differs, so the next
            # poll sends the event again (it is idempotent).
            if doc.get("order_id"):
                self.orders.pending_seen(str(doc["order_id"]), value, seen_confirmed)
            self.pool.watch.show_pending(address, value, seen_confirmed)
            if value > before:
                self.payments.seen_pending(doc, value - before)
        return waiting, bundles

    def _close_ended(self, watched: list[Doc], release: bool) -> None:
        now = utcnow()
        for doc in watched:
            until = doc.get("watch_until")
            if until is None or as_utc(until) > now:
                continue
            fresh = self.pool.watch.entry(str(doc["_id"]))
            if fresh is None or as_utc(fresh["watch_until"]) > now:
                continue  # a credit just extended it
            if _never_paid(fresh):
                # Never signed, nothing arrived: safe to hand out again, at the queue's end;
                # unless a bundle paying it is on its way or just confirmed (the balance lags
                # inclusion by a milestone): then the next pass records it for this order.
                order_id = str(doc.get("order_id"))
                let_go = release and not self._arriving(fresh)
                if let_go and self.pool.release(str(doc["_id"]), order_id):
                    self.orders.window_closed(order_id)
            elif self.pool.close(str(doc["_id"])):
                log.info("deposit address %s closed (order %s)", doc["_id"], doc.get("order_id"))
                if doc.get("order_id"):
                    self.orders.window_closed(str(doc["order_id"]))

    def _arriving(self, entry: Doc) -> bool:
        """A bundle pays the address that is not one of its payments before this order (only
        an address that came back to the pool has those: the payments are read for it only)."""
        address = str(entry["_id"])
        earlier = self.payments.bundles_of(address) if int(entry.get("base_iota", 0)) else set()
        return any(b.bundle_hash not in earlier for b in self.ledger.bundles_paying([address]))

    def scan_strays(self) -> int:
        """Record value on addresses no watched order holds as unmatched; returns how many."""
        unheld = self.pool.unheld()
        if not unheld:
            return 0
        balances = self.ledger.confirmed_balances([str(d["_id"]) for d in unheld])
        self._node_answered()
        found = 0
        for doc in unheld:
            address = str(doc["_id"])
            if balances.values.get(address, 0) > int(doc.get("accounted_iota", 0)):
                bundles = self._evidence(address, self.payments.bundles_of(address))
                payment = self.payments.record_increase(
                    doc, balances.values[address], balances.ledger_index, None, bundles
                )
                if payment is not None:
                    self._evidence_later(payment)
                    found += 1
        return found


def _paid(entry: Doc) -> bool:
    return int(entry.get("accounted_iota", 0)) > int(entry.get("base_iota", 0))


def _never_paid(entry: Doc) -> bool:
    return (
        not _paid(entry)
        and int(entry.get("pending_iota", 0)) == 0
        and int(entry.get("confirmed_seen_iota", 0)) == 0
    )


def _hot(entry: Doc, now: dt.datetime) -> bool:
    """Polled every interval: paid orders (late payments, top-ups), unpaid ones inside their
    payment window, and any with value on its way. An unpaid order past its window is read by
    the maintenance pass only: a stranger's abandoned orders cannot grow every poll."""
    expires = entry.get("order_expires_at")
    return (
        _paid(entry)
        or int(entry.get("pending_iota", 0)) > 0
        or expires is None
        or as_utc(expires) > now
    )


def watch_window_end(expires_at: dt.datetime, late_window_s: float) -> dt.datetime:
    return expires_at + dt.timedelta(seconds=late_window_s)
