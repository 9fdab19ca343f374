"""Time spent in the store, by command and collection (pymongo's command monitoring).

FerretDB scans a whole collection for any query but an `_id` equality, so which collection
costs what is the first question when the store saturates; this answers it from /metrics
(`broker_auth_store_command_seconds`).
"""

from __future__ import annotations

import threading

from pymongo import monitoring

from broker_auth.infra import metrics

# Commands whose first value is not a collection name.
_NOT_A_COLLECTION = {"getMore": "collection"}


class StoreCommandTimer(monitoring.CommandListener):
    def __init__(self) -> None:
        self._collections: dict[tuple[object, int], str] = {}
        self._lock = threading.Lock()  # pymongo calls listeners from every thread using it

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        field = _NOT_A_COLLECTION.get(event.command_name, event.command_name)
        target = event.command.get(field)
        collection = target if isinstance(target, str) else "-"
        with self._lock:
            self._collections[(event.connection_id, event.request_id)] = collection

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._observe(
            event.connection_id, event.request_id, event.command_name, event.duration_micros
        )

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._observe(
            event.connection_id, event.request_id, event.command_name, event.duration_micros
        )

    def _observe(self, connection: object, request_id: int, command: str, micros: int) -> None:
        with self._lock:
            collection = self._collections.pop((connection, request_id), "-")
        metrics.STORE_COMMAND_SECONDS.labels(command, collection).observe(micros / 1e6)
