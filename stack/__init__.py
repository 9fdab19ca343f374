"""Running the whole system locally (`make run`, `make demo`): configuration files, secrets and
the supervised processes. Nothing else: the harness tests and benchmarks share is `testing/`,
the Docker Compose init step is `deploy/`.
"""
