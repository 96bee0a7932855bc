# `make test` and `make demo` work on a fresh machine: the environment is created on first use.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
ENV_STAMP := .venv/.synced

.PHONY: env lint format test demo bench clean

env: $(ENV_STAMP)

$(ENV_STAMP): pyproject.toml uv.lock
	@python3 -c "import uv" 2>/dev/null || command -v uv >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

lint: env
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy tracker

format: env
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

test: lint
	$(UV) run --frozen pytest

demo: env
	@bash scripts/ensure-rabbitmq.sh
	$(UV) run --frozen python scripts/demo.py

bench: env
	@bash scripts/ensure-rabbitmq.sh
	$(UV) run --frozen python -m bench.run

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
