"""A buyer's cancel is carried out by the payment watcher, on the leader, between its polls.

After its creation an order's record has one writer: the watcher thread of the replica that
holds the payments lease (which also shows pending value on its address's watch entry, and
removes the entry when the order lets the address go). A cancel writes both, and on FerretDB
neither a compare-and-set nor an update by `_id` is safe against a second writer: an update
is a read, then a write of the whole document, so two compare-and-sets both succeed (198 of
200 racing rounds, `bench/store_shapes.py`) and the later write undoes the other's fields. A
cancel served by an API thread raced the watcher recording a payment arriving at that moment.

So the API thread, on whichever replica, stores a request (`cancel_requests`) and waits for
its answer; the watcher carries out the pending requests at the start of each poll, oldest
first, and stores the answer; the API thread answers the buyer (204, 404, 409, 503) and
deletes the request. Who acts on a request is decided by a unique insert of its id into
`cancel_decisions` (atomic on FerretDB too): the watcher inserts it before cancelling, an
asker whose wait ran out inserts it before answering 503, so a 503 means "not cancelled", and
an asker that lost waits for the watcher's answer instead. A buyer has at most
MAX_WAITING_PER_BUYER requests waiting; two for one order are carried out in turn (the second
finds it cancelled: 204).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable

from pymongo.errors import DuplicateKeyError

from broker_auth.errors import ConflictError, NotFoundError, ServiceError, UnavailableError
from broker_auth.infra.clock import as_utc, utcnow
from broker_auth.infra.db import Doc, Store

log = logging.getLogger(__name__)

ANSWER_WAIT_S = 20.0  # how long a buyer's request waits for the watcher
ANSWER_POLL_S = (0.1, 0.5)  # the asker reads its request this often, backing off to the second
AFTER_DECIDED_S = 60.0  # the watcher took it: its answer comes within two node calls
MAX_WAITING_PER_BUYER = 3
STALE_S = 600.0  # a request or decision nobody came back for is deleted after this
STALE_SPAN = dt.timedelta(seconds=STALE_S)

# The errors a cancel answers with, by HTTP status.
ERRORS: dict[int, type[ServiceError]] = {
    404: NotFoundError,
    409: ConflictError,
    503: UnavailableError,
}

Cancel = Callable[[str, str], None]  # (username, order_id): Orders.cancel


class TooManyWaitingError(ServiceError):
    status_code = 429


class CancelRequests:
    def __init__(
        self,
        store: Store,
        wait_s: float = ANSWER_WAIT_S,
        poll_s: tuple[float, float] = ANSWER_POLL_S,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.requests = store.cancel_requests
        self.decisions = store.cancel_decisions
        self.orders = store.orders
        self.wait_s = wait_s
        self.poll_s = poll_s
        self.wake = wake  # this process's watcher (if it leads, it serves at once)

    # -- the API thread ----------------------------------------------------------------------
    def ask(self, username: str, order_id: str) -> None:
        """Have the watcher cancel the buyer's order; raises what the cancel answered."""
        order = self.orders.find_one({"_id": order_id}, {"username": 1})
        if order is None or order.get("username") != username:
            raise NotFoundError("no such order")
        if self.requests.count_documents({"username": username}) >= MAX_WAITING_PER_BUYER:
            raise TooManyWaitingError(
                f"{MAX_WAITING_PER_BUYER} cancels of yours are waiting: wait for their answer"
            )
        request_id = uuid.uuid4().hex
        self.requests.insert_one(
            {"_id": request_id, "order_id": order_id, "username": username, "asked_at": utcnow()}
        )
        if self.wake is not None:
            self.wake()
        taken = False
        try:
            answer = self._answer(request_id, self.wait_s)
            if answer is None and not self._decide(request_id, "asker"):
                taken = True  # the watcher is carrying it out: its answer comes soon
                answer = self._answer(request_id, AFTER_DECIDED_S)
        finally:
            self.requests.delete_one({"_id": request_id})
        if answer is None:
            outcome = (
                "the order may have been cancelled: read it" if taken else "it was not cancelled"
            )
            raise UnavailableError(
                "the payment watcher did not answer in time (the IOTA node, the store or the"
                f" leading replica is down or slow): {outcome}; ask again"
            )
        self.decisions.delete_one({"_id": request_id})
        status = int(answer["status"])
        if status != 204:
            raise ERRORS.get(status, UnavailableError)(str(answer.get("detail", "")))

    def _answer(self, request_id: str, wait_s: float) -> Doc | None:
        deadline = time.monotonic() + wait_s
        pause = self.poll_s[0]
        while True:
            doc = self.requests.find_one({"_id": request_id})
            if doc is not None and "status" in doc:
                return doc
            if time.monotonic() >= deadline:
                return None
            time.sleep(pause)
            pause = min(pause * 2, self.poll_s[1])

    def _decide(self, request_id: str, by: str) -> bool:
        """Whether `by` acts on the request: the first to insert its decision."""
        try:
            self.decisions.insert_one({"_id": request_id, "by": by, "at": utcnow()})
            return True
        except DuplicateKeyError:
            return False

    # -- the watcher thread ------------------------------------------------------------------
    def serve(self, cancel: Cancel, leads: Callable[[], bool] = lambda: True) -> int:
        """Carry out the pending requests, oldest first, while this process leads; returns how
        many were answered."""
        answered = 0
        pending = []
        for doc in self.requests.find():
            asked = doc.get("asked_at")
            if not isinstance(asked, dt.datetime) or utcnow() - as_utc(asked) > STALE_SPAN:
                self.requests.delete_one({"_id": doc["_id"]})  # malformed, or nobody came back
            elif "status" not in doc:
                pending.append(doc)
        for doc in sorted(pending, key=lambda d: as_utc(d["asked_at"])):
            if not leads():
                break  # deposed meanwhile: the new leader's watcher serves the rest
            if not self._decide(str(doc["_id"]), "watcher"):
                continue  # its asker gave up (503), or a former leader took it
            status, detail = 204, ""
            try:
                cancel(str(doc["username"]), str(doc["order_id"]))
            except ServiceError as exc:
                status, detail = exc.status_code, exc.detail
            except Exception:  # one bad request must not stop the watcher's polls
                log.exception("cancel of order %s failed", doc["order_id"])
                status, detail = 503, "the cancel failed: ask again"
            self.requests.update_one(
                {"_id": doc["_id"]},
                {"$set": {"status": status, "detail": detail, "answered_at": utcnow()}},
            )
            answered += 1
        return answered

    def tidy(self) -> int:
        """Delete decisions nobody came back for (the watcher's maintenance pass)."""
        cutoff = utcnow() - STALE_SPAN
        return int(self.decisions.delete_many({"at": {"$lt": cutoff}}).deleted_count)
