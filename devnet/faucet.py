"""The devnet faucet: a genesis address holding the whole supply, spent with real signatures.

Each credit is an ordinary, valid value bundle (output to the requested address, signed input
from the genesis address) so PyOTA's `get_bundles`/`get_transfers` accept it and the receiving
address is "used" for `get_inputs`/`get_new_addresses`. The faucet seed is public on purpose:
this is a development tangle.
"""

from __future__ import annotations

import secrets

from iota import Address, ProposedBundle, ProposedTransaction, Tag
from iota.crypto.addresses import AddressGenerator
from iota.crypto.signing import KeyGenerator
from iota.crypto.types import PrivateKey, Seed

FAUCET_SEED = "DEVNET9FAUCET9GENESIS" + "9" * 60
FAUCET_TAG = "DEVNET9FAUCET9"  # + 14 random trytes: equal credits must not share a bundle hash
# Security level 1: one signature transaction per credit, and the cheapest signing.
SECURITY_LEVEL = 1
TRYTES = "9ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class Faucet:
    def __init__(self) -> None:
        seed = Seed(FAUCET_SEED.encode())
        self._address: Address = AddressGenerator(seed, SECURITY_LEVEL).get_addresses(0, 1)[0]
        self._key: PrivateKey = KeyGenerator(seed).get_key(0, SECURITY_LEVEL)

    @property
    def address(self) -> str:
        return str(self._address)

    def credit_bundle(self, address: str, value: int) -> list[str]:
        """Signed bundle moving `value` from the genesis address to `address`, head first."""
        # Two credits of the same value to the same address in the same second would otherwise
        # be one bundle (the essence has second-resolution timestamps): a reattachment.
        tag = FAUCET_TAG + "".join(secrets.choice(TRYTES) for _ in range(27 - len(FAUCET_TAG)))
        bundle = ProposedBundle(
            [ProposedTransaction(address=Address(address), value=value, tag=Tag(tag))]
        )
        source = Address(self._address, balance=value, key_index=0, security_level=SECURITY_LEVEL)
        bundle.add_inputs([source])
        bundle.finalize()
        bundle.sign_input_at(1, self._key)
        return [str(t) for t in bundle.as_tryte_strings()]
