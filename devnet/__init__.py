"""devnet: Hornet 0.5.6 as the local IOTA tangle (hornet.py) and its faucet (faucet.py)."""
