"""A buyer's cancel is carried out by the payment watcher, on the leader, between its polls.

An order's record and its address's watch entry have one writer: the watcher thread of the
replica that holds the payments lease. A cancel writes both (the order's status, the entry's
removal when nothing arrived), and on FerretDB neither a compare-and-set nor an update by `_id`
is safe against a second writer: each update is a read then a write of the whole document, so
two compare-and-sets both succeed (197 of 200 racing rounds, measured) and the later write
undoes the other's fields. A cancel served by an API thread raced the watcher recording a
payment that was arriving at that moment.

So the API thread, on whichever replica, stores a request (`cancel_requests`) and waits for
its outcome; the watcher answers every pending request at the start of each poll, and the API
thread answers the buyer (204, 404, 409, 503) and deletes the request. Two requests for one
order are carried out one after the other (the second finds it cancelled: 204). A request not
answered within ANSWER_WAIT_S is answered 503 and not carried out later (unless the watcher had
begun it at that moment: the order's status tells). Requests are few and short-lived: the
watcher reads them all each poll.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from broker_auth.errors import (
    ConflictError,
    NotFoundError,
    ServiceError,
    UnavailableError,
)
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Store

log = logging.getLogger(__name__)

ANSWER_WAIT_S = 20.0  # how long a buyer's request waits for the watcher
ANSWER_POLL_S = 0.1
STALE_S = 300.0  # an answered request nobody came back for, or one asked long ago

# The errors a cancel answers with, by HTTP status.
ERRORS: dict[int, type[ServiceError]] = {
    404: NotFoundError,
    409: ConflictError,
    503: UnavailableError,
}

Cancel = Callable[[str, str], None]  # (username, order_id): Orders.cancel


class CancelRequests:
    def __init__(
        self, store: Store, wait_s: float = ANSWER_WAIT_S, poll_s: float = ANSWER_POLL_S
    ) -> None:
        self.col = store.db["cancel_requests"]
        self.orders = store.orders
        self.wait_s = wait_s
        self.poll_s = poll_s

    # -- the API thread ----------------------------------------------------------------------
    def ask(self, username: str, order_id: str) -> None:
        """Have the watcher cancel the buyer's order; raises what the cancel answered."""
        order = self.orders.find_one({"_id": order_id}, {"username": 1})
        if order is None or order.get("username") != username:
            raise NotFoundError("no such order")
        request_id = uuid.uuid4().hex
        self.col.insert_one(
            {"_id": request_id, "order_id": order_id, "username": username, "asked_at": utcnow()}
        )
        deadline = time.monotonic() + self.wait_s
        while True:
            doc = self.col.find_one({"_id": request_id})
            if doc is not None and "status" in doc:
                self.col.delete_one({"_id": request_id})
                _raise(int(doc["status"]), str(doc.get("detail", "")))
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(self.poll_s)
        self.col.delete_one({"_id": request_id})
        raise UnavailableError(
            "the payment watcher did not answer in time (the IOTA node, the store or the"
            " leading replica is down or slow): ask again"
        )

    # -- the watcher thread ------------------------------------------------------------------
    def serve(self, cancel: Cancel) -> int:
        """Carry out every pending request, oldest first; returns how many were answered."""
        answered = 0
        now = utcnow()
        for doc in sorted(self.col.find(), key=lambda d: as_utc(d["asked_at"])):
            age = (now - as_utc(doc["asked_at"])).total_seconds()
            if age > STALE_S or ("status" not in doc and age > self.wait_s):
                # Its asker stopped waiting (and was told to ask again): not carried out.
                self.col.delete_one({"_id": doc["_id"]})
                continue
            if "status" in doc:
                continue
            status, detail = 204, ""
            try:
                cancel(str(doc["username"]), str(doc["order_id"]))
            except ServiceError as exc:
                status, detail = exc.status_code, exc.detail
            except Exception:  # one bad request must not stop the watcher's polls
                log.exception("cancel of order %s failed", doc["order_id"])
                status, detail = 503, "the cancel failed: ask again"
            self.col.update_one(
                {"_id": doc["_id"]},
                {"$set": {"status": status, "detail": detail, "answered_at": utcnow()}},
            )
            answered += 1
        return answered


def _raise(status: int, detail: str) -> None:
    if status == 204:
        return
    raise ERRORS.get(status, UnavailableError)(detail)
