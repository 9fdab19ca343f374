# Every target does its own set-up first (Debian packages, .venv, FerretDB); see scripts/bootstrap.sh.
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup run test lint demo bench clean-data

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

bench: setup
	$(VENV)/python -m bench

clean-data:
	rm -rf .data
