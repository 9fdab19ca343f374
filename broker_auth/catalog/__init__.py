"""What the seller offers: products (live topics sold by the hour) and devices."""
