"""The node's event feed: Hornet's ZMQ plugin pushes each new solid milestone, and the
watcher polls at once instead of at its next interval.

The feed only says *when* to look; what is credited is still read from the ledger by the
watcher (`getBalances` answers at the latest solid milestone, which `lmsi` announces: `sn`
fires before that index moves, so it is not used to credit). The feed can drop or lag (the
plugin drops events when its queue is full and sends none before the node was synced once), so
the watcher's poll stays as the fallback. A SUB socket reconnects by itself when the node
restarts; the feed counts what it received so an operator sees it is alive
(`broker_auth_node_feed_events_total`).

Message format (one frame, fields separated by spaces): `lmsi <previous index> <new index>`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import zmq

from broker_auth.infra import metrics
from broker_auth.infra.background import BackgroundWorker

log = logging.getLogger(__name__)

RECEIVE_TIMEOUT_MS = 250  # how often the thread looks whether it is stopping
SILENT_WARNING_S = 120.0  # no event for this long while connected: say so once


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
    """Subscribes to `lmsi` on the node's ZMQ feed and calls `on_milestone(index)` for each."""

    join_timeout_s = 5.0

    def __init__(self, url: str, on_milestone: Callable[[int], None]) -> None:
        super().__init__("node-feed")
        self.url = url
        self.on_milestone = on_milestone
        self.last_index: int | None = None
        self.last_event: float | None = None  # monotonic time of the last event received

    def _run(self) -> None:
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        socket = context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVTIMEO, RECEIVE_TIMEOUT_MS)
        socket.setsockopt(zmq.SUBSCRIBE, b"lmsi ")
        socket.connect(self.url)
        log.info("node feed: subscribed to new solid milestones at %s", self.url)
        started = time.monotonic()
        warned = False
        try:
            while not self.stopping:
                try:
                    frame = socket.recv()
                except zmq.Again:
                    quiet_since = self.last_event or started
                    if not warned and time.monotonic() - quiet_since > SILENT_WARNING_S:
                        log.warning(
                            "node feed: nothing from %s for %.0f s; the watcher's poll carries on",
                            self.url,
                            SILENT_WARNING_S,
                        )
                        warned = True
                    continue
                self._received(frame)
                warned = False
        finally:
            socket.close()

    def _received(self, frame: bytes) -> None:
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
