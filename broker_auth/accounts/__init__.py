"""Buyers: accounts, sessions, password hashing, and the throttles that guard them."""
