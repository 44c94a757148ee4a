# Dropship fulfilment: `make up` runs the whole system, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PG_BIN ?= $(firstword $(wildcard /usr/lib/postgresql/*/bin))
# One test process leaves a core idle (the suite mostly waits: consumer groups joining,
# deadlines polled). Two workers keep both cores of a small machine busy without starving
# the tests that time suppliers and clocks; four finish sooner but saturate two cores.
# `make test TEST_WORKERS=0` runs it in one process; PYTEST_ARGS adds to the command.
TEST_WORKERS ?= 2

.PHONY: up down status test lint typecheck importlint bench bench-intake bench-notify bench-metrics bench-kpis bench-stack rebuild-metrics lock asyncapi clean sysdeps chaos prodshape

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# System packages the tests and benchmarks need (PostgreSQL server, wrk, Chromium for
# the dashboard's browser test, kubectl, iproute2 and openssl for the production-shape
# run). Idempotent.
sysdeps:
	@missing=""; \
	[ -n "$$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null)" ] || missing="$$missing postgresql"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v kubectl >/dev/null || missing="$$missing kubectl"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

up: $(STAMP)
	$(PY) -m deploy.local up

down: $(STAMP)
	$(PY) -m deploy.local down

status: $(STAMP)
	$(PY) -m deploy.local status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy shared services deploy rigs bench

importlint: $(STAMP)
	$(VENV)/bin/lint-imports

asyncapi: $(STAMP)
	$(PY) -m shared.asyncapi > docs/asyncapi.yaml

# Whole suite: static checks, then pytest against a throwaway PostgreSQL
# cluster and tansu broker that deploy.testenv starts and always stops.
test: $(STAMP) sysdeps lint typecheck importlint
	$(PY) -m deploy.testenv -- $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: $(STAMP) sysdeps
	$(PY) -m deploy.testenv -- $(PY) -m bench pipeline

bench-intake: $(STAMP) sysdeps
	$(PY) -m deploy.testenv -- $(PY) -m bench intake

bench-notify: $(STAMP) sysdeps
	$(PY) -m deploy.testenv -- $(PY) -m bench notify

bench-metrics: $(STAMP) sysdeps
	$(PY) -m deploy.testenv -- $(PY) -m bench metrics

# GET /v1/kpis over 1,000,000 orders' history (30 and 365 days), ingestion on top
bench-kpis: $(STAMP) sysdeps
	$(PY) -m deploy.testenv -- $(PY) -m bench kpis $(KPIS_ARGS)

# The whole stack (`deploy.local up` on PostgreSQL) at fixed arrival rates, then the
# bare baselines; writes nothing unless STACK_ARGS has --results FILE.
bench-stack: $(STAMP) sysdeps
	$(PY) -m deploy.testenv -- $(PY) -m bench stack $(STACK_ARGS)

# The long chaos run: every process SIGKILLed in turn under a steady order stream, a
# supplier failing half its calls, webhooks twice and out of order; then the checker.
chaos: $(STAMP) sysdeps
	DROPSHIP_CHAOS_SECONDS=$${DROPSHIP_CHAOS_SECONDS:-300} $(PY) -m deploy.testenv -- \
	  $(PY) -m pytest tests/e2e/test_chaos.py -s -p no:cacheprovider --timeout 1800

# docker-compose.yml and the k8s production overlay run for real, each service in its own
# network namespace (needs root), telling the dropship story (README "The production shape, run").
prodshape: $(STAMP) sysdeps
	$(PY) -m pytest tests/e2e/test_production_shape.py -p no:cacheprovider

# Replay every event topic into the metrics database from scratch (stop the metrics
# service first, or set DROPSHIP_METRICS_DATABASE_URL to a fresh database).
rebuild-metrics: $(STAMP)
	$(PY) -m services.metrics.rebuild --reset

lock:
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip compile pyproject.toml -o requirements.lock --python-version 3.11
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev -o requirements-dev.lock --python-version 3.11

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
