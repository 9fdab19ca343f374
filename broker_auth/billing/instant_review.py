"""Each watcher poll, instant access looks at the pending bundles it saw (the leader only).

1. Provisional access whose bundle the ledger's view dropped (another bundle spent its
   inputs, the node calls it conflicting, it fell below max depth) or calls contested
   (another pending bundle spends the same inputs) is withdrawn now: the poll after the
   milestone that decided it, well within 2 s. A double spend also blocks the payer and those
   inputs (access/provisional.py). A bundle merely out of this poll's view (the view counts a
   few bundles per address) keeps its access. Access past INSTANT_ACCESS_CONFIRM_S needs
   nothing: `until` never passes that deadline, so expiry ends it.
2. Pending bundles paying a watched order become candidates; the pure rules decide
   (access/instant_access.py) and what they admit opens access.
A confirmed one needs nothing here: crediting converts it (grants.py). Before anything else
reads the entries, the watcher's first poll in a process (start, lease gained) makes the
grants agree with them and finishes the moves a crash cut short (`repair_once`).
"""

from __future__ import annotations

import datetime as dt
import logging

from broker_auth.access.instant_access import Admitted, Candidate, Limits, admit
from broker_auth.access.provisional import Opening, ProvisionalGrants
from broker_auth.infra.clock import utcnow
from broker_auth.infra.db import Doc, Store
from broker_auth.ledger import BundleSeen, Ledger

log = logging.getLogger(__name__)

FIRST_SEEN_MAX = 10_000  # pending bundles remembered for their deadline (oldest forgotten)


class InstantAccess:
    def __init__(
        self, store: Store, ledger: Ledger, provisional: ProvisionalGrants, limits: Limits
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.provisional = provisional
        self.limits = limits
        self._first_seen: dict[str, dt.datetime] = {}
        self._repaired = False

    def lease_gained(self) -> None:
        """Another process may have led meanwhile: check the grants again at the next pass."""
        self._repaired = False

    def repair_once(self) -> None:
        """At a process's first poll (start, lease gained), before anything reads the entries:
        grants agree with them, and moves a crash cut short are finished."""
        if not self._repaired:
            self.provisional.repair()
            self._repaired = True

    @property
    def on(self) -> bool:
        return self.limits.max_seconds > 0 and self.limits.max_iota > 0

    def review(self, watched: list[Doc], seen: list[BundleSeen]) -> None:
        """`seen`: what the ledger answered for the addresses of `watched`."""
        now = utcnow()
        pending = {b.bundle_hash: b for b in seen if not b.confirmed}
        for entry in self.provisional.running(now):
            state = self.ledger.bundle_state(str(entry["_id"]))
            if state in ("contested", "dropped:spent", "dropped:conflicting"):
                self.provisional.withdraw(entry, f"double spend ({state})", block=True)
            elif state.startswith("dropped:"):
                self.provisional.withdraw(entry, f"it can no longer confirm ({state})")
        if not self.on or not pending:
            return
        self._remember(pending, now)
        orders = self._orders_of(watched)
        candidates: list[Candidate] = []
        openings: dict[str, tuple[Doc, BundleSeen]] = {}
        for bundle in pending.values():
            order = orders.get(bundle.address)
            if order is None or self.provisional.blocked(
                str(order["username"]), bundle.inputs, now
            ):
                continue
            candidates.append(self._candidate(bundle, order))
            openings[bundle.bundle_hash] = (order, bundle)
        still = self.provisional.running(now)
        for decision in admit(candidates, self.provisional.as_provisional(still), self.limits, now):
            if isinstance(decision, Admitted):
                order, bundle = openings[decision.bundle_hash]
                opening = Opening(
                    decision,
                    bundle.address,
                    str(order["product_id"]),
                    str(order["topic_filter"]),
                    bundle.inputs,
                    self._first_seen[bundle.bundle_hash],
                )
                self.provisional.open(opening, str(order["username"]))

    def _remember(self, pending: dict[str, BundleSeen], now: dt.datetime) -> None:
        for bundle_hash in pending:
            if bundle_hash not in self._first_seen:
                # After a restart or hand-over an admitted bundle keeps its first sighting.
                stored = self.provisional.first_seen(bundle_hash)
                self._first_seen[bundle_hash] = stored or now
        while len(self._first_seen) > FIRST_SEEN_MAX:
            del self._first_seen[next(iter(self._first_seen))]

    def _orders_of(self, watched: list[Doc]) -> dict[str, Doc]:
        """address -> its order, for watched addresses held by a buyer's order."""
        orders: dict[str, Doc] = {}
        for entry in watched:
            order_id = entry.get("order_id")
            if not order_id:
                continue
            order = self.store.orders.find_one({"_id": order_id})  # by _id: no scan on FerretDB
            if order is not None and order.get("username"):
                orders[str(entry["_id"])] = order
        return orders

    def _candidate(self, bundle: BundleSeen, order: Doc) -> Candidate:
        unpaid = int(order["amount_iota"]) - int(order.get("confirmed_iota", 0))
        return Candidate(
            bundle_hash=bundle.bundle_hash,
            order_id=str(order["_id"]),
            buyer=str(order["username"]),
            value=bundle.value,
            order_unpaid_iota=max(0, unpaid),
            price_iota_per_hour=int(order["price_iota_per_hour"]),
            inputs=bundle.inputs,
            first_seen=self._first_seen[bundle.bundle_hash],
            ready=bundle.ready and not bundle.contested,
            # The ledger keeps a pending bundle in view only while its inputs' confirmed
            # balances cover it (iri.py drops the others as "spent").
            covered=True,
        )
