"""The seam between payments and a ledger: watched addresses in, confirmed value and evidence out.

Orders, crediting and grants use only these types; they know nothing of trytes or nodes. One
implementation per network (`iri.py`: any IRI-API node, Hornet included, through pyota); a
second network adds a module here and touches nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class LedgerError(RuntimeError):
    """What a ledger implementation raises; callers that only retry later catch this."""


class LedgerUnavailableError(LedgerError):
    """The node did not answer, or answered something unusable: try again later."""


@dataclass(frozen=True)
class Balances:
    """Confirmed value per address, as of one ledger state (a milestone)."""

    values: dict[str, int]
    ledger_index: int


@dataclass(frozen=True)
class BundleSeen:
    """A valid, signed transfer paying an address: evidence for people, never an amount."""

    bundle_hash: str
    address: str
    value: int
    confirmed: bool
    # For instant access (pending bundles only): the addresses it spends; whether the node
    # answered getTipInfo for it as solid, not conflicting and not below max depth; whether
    # another pending bundle seen spends one of the same inputs (a double spend in the making).
    inputs: frozenset[str] = frozenset()
    ready: bool = False
    contested: bool = False


class Ledger(Protocol):
    name: str

    def ledger_index(self) -> int:
        """The latest confirmed ledger state (milestone); raises when the node is unavailable."""

    def check_address(self, address: str) -> str | None:
        """None if `address` can receive on this network, else the reason it cannot."""

    def confirmed_balances(self, addresses: Sequence[str]) -> Balances:
        """The ledger's confirmed value on each address (one state for all of them)."""

    def bundles_paying(
        self, addresses: Sequence[str], recheck_dropped: bool = False
    ) -> list[BundleSeen]:
        """Valid bundles with value to these addresses, each once however often attached:
        confirmed ones, and pending ones that can still confirm (the work bounded whatever
        strangers attach). `recheck_dropped`: also those dropped as unconfirmable that
        confirmed after all (evidence)."""

    def next_look_s(self) -> float | None:
        """Seconds until pending work (a retry) is due; None if none waits."""

    def bundle_state(self, bundle_hash: str) -> str:
        """ "confirmed", "pending", "contested", "dropped:<why>" or "unknown" (not seen)."""

    def were_spent(self, addresses: Sequence[str]) -> dict[str, bool]:
        """Whether each address ever signed a spend (unsafe to receive on)."""

    def messages_paying(self, bundle_hash: str, address: str) -> tuple[list[str], bool]:
        """The message trytes of every value transaction of the bundle paying `address`, from
        every attachment of it the node lists (each distinct message once): a message is not
        covered by the bundle hash, so copies may differ. And whether the node listed them all
        (it caps its answers: a stranger can attach many copies)."""
