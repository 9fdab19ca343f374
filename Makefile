# Every target does its own set-up first (Debian packages, .venv, FerretDB); see scripts/bootstrap.sh.
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup run test lint demo bench clean-data lock

setup:
	@./scripts/bootstrap.sh

run: setup
	@$(VENV)/iot-stack run

test: setup lint
	$(VENV)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy .

demo: setup
	@$(VENV)/iot-stack demo

# The benchmarks also compare with Telegraf, built once for them (never for run or test).
bench:
	@BOOTSTRAP_TELEGRAF=1 ./scripts/bootstrap.sh
	$(VENV)/python -m bench

clean-data:
	rm -rf .data

# Re-resolve every Python dependency to the newest allowed versions, with hashes. Commit both
# lock files after `make test` passes with them.
lock: setup
	$(VENV)/uv pip compile requirements.in --generate-hashes --python-version 3.11 \
		--no-emit-package pysha3 --no-emit-package iot-telemetry-broker --upgrade -o requirements.lock
	$(VENV)/uv pip compile requirements-prod.in --generate-hashes --python-version 3.11 \
		--no-emit-package pysha3 --no-emit-package iot-telemetry-broker --upgrade -o requirements-prod.lock
