# `make test` and `make demo` work on a fresh machine: the environment is created on first use.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
ENV_STAMP := .venv/.synced

.PHONY: env lint format test demo console screenshots bench soak cluster cluster-bench clean

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

# Coverage of the whole package is printed; the core (all but the adapters and the CLI)
# must keep 90% of its branches covered.
test: lint
	$(UV) run --frozen pytest --cov --cov-report=term
	@printf 'core branch coverage (must be >= 90%%): '
	@$(UV) run --frozen coverage report --omit='tracker/rabbit/*,tracker/cli/*' \
		--fail-under=90 --format=total

demo: env
	@bash scripts/ensure-rabbitmq.sh
	$(UV) run --frozen python scripts/demo.py

# The same demo, then the service and its console stay up (the URL is printed) until Ctrl-C.
console: env
	@bash scripts/ensure-rabbitmq.sh
	$(UV) run --frozen python scripts/demo.py --console

# docs/console-*.png: the console's main pages, taken in headless Chromium.
screenshots: env
	@bash scripts/ensure-rabbitmq.sh
	$(UV) run --frozen python scripts/screenshots.py

bench: env
	@bash scripts/ensure-rabbitmq.sh
	$(UV) run --frozen --group bench python -m bench.run $(BENCH_ARGS)

# The fault soak at size: worker processes on a private RabbitMQ node and a MongoDB stand-in,
# connections closed, the node killed, a worker killed inside a handler; `make test` runs a
# small one (tests/test_fault_soak.py). SOAK_ARGS adds options (python -m tests.soak --help).
soak: env
	$(UV) run --frozen python -m tests.soak --tasks 3000 --workers 4 $(SOAK_ARGS)

# A three-node RabbitMQ cluster on private ports: 2,000 tasks through two workers and a
# publisher while the node a worker is connected to stops (`make test` runs 60), then the
# throughput of one, two and three worker processes against the cluster.
cluster: env
	TRACKER_CLUSTER_TASKS=2000 $(UV) run --frozen pytest -s -p no:cacheprovider tests/test_cluster_run.py

cluster-bench: env
	$(UV) run --frozen python -m bench.cluster

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
