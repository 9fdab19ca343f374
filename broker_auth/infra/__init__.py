"""Shared infrastructure: MongoDB, the leader lease, background threads, the clock,
metrics and the business-event writer."""
