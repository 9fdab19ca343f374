"""How many commands this process sent to the store, by command and collection (read from
broker_auth's own metric): what tests of a store's load count."""

from __future__ import annotations

from prometheus_client import REGISTRY


def store_commands(command: str, collection: str) -> float:
    value = REGISTRY.get_sample_value(
        "broker_auth_store_command_seconds_count",
        {"command": command, "collection": collection},
    )
    return value or 0.0
