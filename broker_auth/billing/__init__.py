"""The money path: orders (the central record), the deposit-address pool, payment
records, the watcher that reads the ledger, pricing, revenue and its outbox."""
