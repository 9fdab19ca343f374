"""The node's event feed: Hornet's ZMQ plugin pushes each new solid milestone, and the
watcher polls at once instead of at its next interval.

The feed only says *when* to look; what is credited is still read from the ledger by the
watcher (`getBalances` answers at the latest solid milestone, which `lmsi` announces: `sn`
fires before that index moves, so it is not used to credit). The feed can drop or lag (the
plugin drops events when its queue is full and sends none before the node was synced once), so
the watcher's poll stays as the fallback. A SUB socket reconnects by itself when the node
restarts; the feed counts what it received so an operator sees it is alive
(`broker_auth_node_feed_events_total`).

Message formats (one frame, fields separated by spaces): `lmsi <previous index> <new index>`;
`tx <hash> <address> <value> <obsolete tag> ...` for every new transaction: one with value to a
watched address wakes the watcher (instant access sees a payment without waiting for the
poll); a flood of them to a watched address wakes it at most every TX_WAKE_GAP_S (watcher).

The feed is not trusted to say more than "look now": `MilestoneNews` lets an announcement
speed up polling only when it is ahead of what the ledger answered, by a few milestones at
most, and newer than the last one taken; anything else (a replay, a flood, a feed of another
network) is ignored, so it can neither make the watcher poll in a loop nor slow it down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import zmq

from broker_auth.infra import metrics
from broker_auth.infra.background import BackgroundWorker
from broker_auth.ledger import ternary

log = logging.getLogger(__name__)

RECEIVE_TIMEOUT_MS = 250  # how often the thread looks whether it is stopping
SILENT_S = 120.0  # no event for this long: say so once and subscribe again
# `lmsi a b` is ~20 bytes, `tx ...` ~520: a peer sending more is dropped (ZMQ_MAXMSGSIZE).
MAX_FRAME_BYTES = 1024
# An announced index more than this ahead of the ledger's answer is not our node's news.
MAX_AHEAD = 5


class MilestoneNews:
    """Which feed announcements are worth polling for (thread-safe; pure, no I/O).

    `announce(index)` is True when the watcher should poll now: `index` is newer than every
    announcement taken and than the ledger's last answer, and at most MAX_AHEAD beyond that
    answer. `ledger_read(index)` records the ledger's answer and says whether it is still
    behind the newest announcement taken (then a quick re-poll may find it)."""

    def __init__(self, max_ahead: int = MAX_AHEAD) -> None:
        self.max_ahead = max_ahead
        self.ledger_index = 0  # 0: the ledger has not answered yet
        self.announced = 0
        self._lock = threading.Lock()

    def announce(self, index: int) -> bool:
        with self._lock:
            if self.ledger_index == 0 or index <= max(self.announced, self.ledger_index):
                return False
            if index > self.ledger_index + self.max_ahead:
                return False
            self.announced = index
            return True

    def ledger_read(self, index: int) -> bool:
        """The ledger answered at milestone `index`; True while an announcement is ahead."""
        with self._lock:
            if index < self.ledger_index:  # the node went back (restored, another network)
                self.announced = 0
            self.ledger_index = index
            return index < self.announced


def parse_payment(frame: bytes) -> str | None:
    """The address a `tx` message sends value to (81 trytes), else None (no value, or
    anything malformed)."""
    parts = frame.split()
    if len(parts) < 4 or parts[0] != b"tx" or len(parts[2]) != 81:
        return None
    address = parts[2].decode("ascii", "replace")
    if not ternary.is_trytes(address):
        return None
    try:
        value = int(parts[3])
    except ValueError:
        return None
    return address if value > 0 else None


def parse_milestone(frame: bytes) -> int | None:
    """The new solid milestone index of an `lmsi` message, else None (anything malformed)."""
    parts = frame.split()
    if len(parts) != 3 or parts[0] != b"lmsi":
        return None
    try:
        index = int(parts[2])
    except ValueError:
        return None
    return index if index >= 0 else None


class NodeFeed(BackgroundWorker):
    """Subscribes to `lmsi` (and `tx` when `on_payment` is given) on the node's ZMQ feed and
    calls `on_milestone(index)` / `on_payment(address)`."""

    join_timeout_s = 5.0

    def __init__(
        self,
        url: str,
        on_milestone: Callable[[int], None],
        silent_s: float = SILENT_S,
        on_payment: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__("node-feed")
        self.silent_s = silent_s
        self.on_payment = on_payment
        self.url = url
        self.on_milestone = on_milestone
        self.last_index: int | None = None
        self.last_event: float | None = None  # monotonic time of the last event received

    def _run(self) -> None:
        warned = False
        while not self.stopping:
            socket = self._subscribe()
            if socket is None:
                return
            try:
                silent = self._receive_until_silent(socket)
            finally:
                socket.close()
            if silent and not warned:
                log.warning(
                    "node feed: nothing from %s for %.0f s; subscribing again (the watcher's"
                    " poll carries on)",
                    self.url,
                    self.silent_s,
                )
            warned = silent

    def _subscribe(self) -> zmq.Socket[bytes] | None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        socket = context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)
        socket.setsockopt(zmq.SUBSCRIBE, b"lmsi ")
        if self.on_payment is not None:
            socket.setsockopt(zmq.SUBSCRIBE, b"tx ")
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        try:
            socket.connect(self.url)
        except zmq.ZMQError as exc:  # a malformed URL: settings only checks its shape
            log.error("node feed: cannot connect to %s (%s); the watcher polls only", self.url, exc)
            socket.close()
            return None
        log.info("node feed: subscribed to new solid milestones at %s", self.url)
        return socket

    def _receive_until_silent(self, socket: zmq.Socket[bytes]) -> bool:
        """Hand each frame on until stopping (False) or `silent_s` without one (True): a link
        ZMQ dropped (an oversized frame) is not reconnected by ZMQ, so the caller opens a new
        socket."""
        quiet_since = time.monotonic()
        while not self.stopping:
            try:
                frame = socket.recv()
            except zmq.Again:
                if time.monotonic() - quiet_since > self.silent_s:
                    return True
                continue
            quiet_since = time.monotonic()
            self._received(frame)
        return False

    def _received(self, frame: bytes) -> None:
        if frame.startswith(b"tx "):
            address = parse_payment(frame)
            if address is not None and self.on_payment is not None:
                metrics.NODE_FEED_EVENTS.labels("tx").inc()
                try:
                    self.on_payment(address)
                except Exception:
                    log.exception("node feed: payment listener failed")
            return
        index = parse_milestone(frame)
        if index is None:
            metrics.NODE_FEED_EVENTS.labels("malformed").inc()
            return
        metrics.NODE_FEED_EVENTS.labels("lmsi").inc()
        self.last_event = time.monotonic()
        if self.last_index is None:
            log.info("node feed: first milestone %d received", index)
        self.last_index = index
        try:
            self.on_milestone(index)
        except Exception:  # the feed outlives a failing listener: the poll still runs
            log.exception("node feed: milestone %d listener failed", index)
