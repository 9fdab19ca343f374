"""Running the whole system locally: configuration files, secrets and real processes.

Used by `make run` (through supervisord), by the test suite and by the benchmarks.
"""
