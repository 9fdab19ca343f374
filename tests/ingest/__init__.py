"""Tests of the ingest worker and the simulator."""
