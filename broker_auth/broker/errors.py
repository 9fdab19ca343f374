"""What goes wrong when broker_auth changes Mosquitto: the broker did not answer, or refused.

Both leave MongoDB as the truth; the reconciliation repairs Mosquitto later. Callers that only
defer the change catch `BrokerError`; the API answers 503 to either.
"""

from __future__ import annotations


class BrokerError(RuntimeError):
    """A change the broker did not carry out."""


class BrokerUnavailableError(BrokerError):
    """The broker did not answer (down, disconnected, timed out), or this replica may not
    make the change now (grant roles while another replica leads)."""


class BrokerRefusedError(BrokerError):
    """The dynamic-security plugin answered a command with an error."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"{command}: {error}")
        self.command = command
        self.error = error
