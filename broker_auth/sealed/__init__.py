"""Sealed purchases: live access bought with nothing but an IOTA payment (no account, no login).

The buyer asks for a quote (billing/orders.py: an order without an account), seals its chosen
MQTT username and password to the seller's key (keys.py) in the protocol of message.py, and
sends that message with the value transaction that pays the quote. On confirmation claims.py
reads every attachment of the paying bundle, opens the one that matches the quote, creates
the MQTT-only buyer and hands the payment on to be credited like any other.
"""
