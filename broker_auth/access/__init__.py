"""What a payment buys: grants of time on a product, their expiry, the buyer's notices."""
