# Alpaca gateway: developer commands. GNU make.
#
#   make test    lint, type-check and run the whole test suite against real Redis/PostgreSQL
#   make run     run the gateway (settings from the environment and config/.env)
#   make demo    run the gateway against the Alpaca emulator, with curl commands to try
#   make kit     the gateway + the Alpaca emulator for a bot's tests (prints GATEWAY_URL, _KEY)
#
# VENV and PYTHON can be overridden: `make test VENV=/tmp/venv-check PYTHON=python3.12`.

VENV ?= .venv
PYTHON ?= python3

BIN := $(VENV)/bin
# Written after a successful install; older than a requirements file means "reinstall".
STAMP := $(VENV)/.requirements.stamp
PYTEST_ARGS ?=
# pytest-xdist workers; each runs whole files (their fixtures and fleets stay together). 0: none.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help
.PHONY: help venv run test lint typecheck fmt demo kit bench bench-streams chaos soak clean

help:
	@echo "make venv       create $(VENV) and install requirements-dev.txt (only when changed)"
	@echo "make run        run the gateway on GATEWAY_HOST:GATEWAY_PORT (127.0.0.1:8000)"
	@echo "make test       ruff format --check, ruff check, mypy, then pytest with real services"
	@echo "make demo       the gateway in front of the Alpaca emulator, with curl commands"
	@echo "make kit        gateway + emulator for a bot's CI (SCENARIO=file PORT=n KIT_ARGS=--detach)"
	@echo "make bench      gateway vs bare app vs nginx (SERVER=granian|uvicorn|both, ROUNDS=n, LOAD=aio)"
	@echo "make bench-streams  stream fan-out: CLIENTS (1000) x SYMBOLS (10) x TICKS (10) on INSTANCES (1), p50/p99"
	@echo "make chaos      faults under load (Redis, PostgreSQL, SIGKILL, upstream), one line of figures each"
	@echo "make soak       mixed traffic for minutes (DURATION=s, 300): memory, series, store must stay flat"
	@echo "make lint       ruff format --check and ruff check"
	@echo "make typecheck  mypy --strict on app/ and tests/emulator/"
	@echo "make fmt        ruff format and ruff check --fix"
	@echo "make clean      remove caches (keeps $(VENV))"

# --- environment ------------------------------------------------------------------------------

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check --quiet -r requirements-dev.txt
	touch $(STAMP)

# --- running ----------------------------------------------------------------------------------

# app.serve reads the settings (GATEWAY_SERVER granian|uvicorn, GATEWAY_HOST, GATEWAY_PORT,
# GATEWAY_WORKERS) and starts that server with the gateway's flags (no server access log: the
# app writes its own, without query strings).
run: venv
	$(BIN)/python -m app.serve

demo: venv
	$(BIN)/python -m tests.demo

# The contract-test kit (tests/emulator/kit.py): the emulator loaded with SCENARIO, the gateway in
# front of it with its own temporary store, a key; prints GATEWAY_URL=, GATEWAY_KEY=, EMULATOR_URL=.
kit: venv
	$(BIN)/python -m tests.emulator.kit --scenario $(or $(SCENARIO),tests/emulator/scenarios/example.yaml) --port $(or $(PORT),8000) $(KIT_ARGS)

# tests/performance: never part of make test. wrk and nginx come from Debian (installed when root,
# else the one command to run); LOAD=aio swaps wrk for the slower asyncio generator, by name only.
bench: venv
	tests/performance/ensure-tools.sh $(if $(filter aio,$(LOAD)),nginx,wrk nginx)
	$(BIN)/python -m tests.performance --server $(or $(SERVER),granian) --load $(or $(LOAD),wrk) $(if $(ROUNDS),--rounds $(ROUNDS))

# One upstream connection fanned out to CLIENTS stream clients over INSTANCES gateways (2 needs
# REDIS_URL); figures only (README "Streams"). make bench prints 1,000 x 10 x 10 on 1 and 2.
bench-streams: venv
	$(BIN)/python -m tests.performance.stream_fanout $(or $(CLIENTS),1000) $(or $(SYMBOLS),10) $(or $(TICKS),10) $(or $(INSTANCES),1)

# tests/chaos and tests/soak run real processes (gateway, emulator, throwaway Redis and
# PostgreSQL on free ports, never the shared ones); make test runs a short chaos pass.
chaos: venv
	$(BIN)/python -m tests.chaos

soak: venv
	$(BIN)/python -m tests.soak $(if $(DURATION),--duration $(DURATION))

# --- checks -----------------------------------------------------------------------------------

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# with-services.sh exports REDIS_URL/DATABASE_URL (a running server or a throwaway one it stops
# afterwards). pytest's exit 5 means "no tests collected": a failure here, never a pass.
# Prometheus/promtool prove the dashboards and alert rules, nginx balances the replicas of the
# scale-out tests (tests/support/fleet.py); installed from Debian when missing.
test: lint typecheck
	tests/infra/ensure-prometheus.sh
	tests/performance/ensure-tools.sh nginx
	@status=0; \
	tests/infra/with-services.sh $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find app tests -type d -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true
