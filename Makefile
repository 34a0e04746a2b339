# The front door: `make serve` and `make test` work on a machine with Python 3.11+ (and npm for the
# pages' live updates and the SDK tests; without it those are off or skipped).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: serve test lint bench clean help

help:
	@echo "make serve   set up .venv and run livesell with embedded PostgreSQL + Valkey and a demo room"
	@echo "make test    set up .venv with dev extras and run the whole test suite"
	@echo "make lint    ruff and mypy"
	@echo "make bench   the load-test suite (QUICK=1 for the short version)"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "livesell needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(VENV)/.installed $@

# The hub is tested with the real npm Centrifugo SDK; install it when Node is present.
tests/js/node_modules/.installed: tests/js/package.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/js && npm install --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the Node SDK tests will be skipped"; fi

# The pages' browser libraries, pinned in web/package.json and served from web/node_modules: the
# npm `centrifuge` SDK (the hub client) and chart.js (the operator page's charts). Without npm the
# pages still load: they say "No live updates" and reload their data every few seconds, and the
# operator page shows its numbers as tables, without charts.
web/node_modules/.installed: web/package.json web/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd web && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the pages will have no live updates and no charts (install npm, then run make again)"; fi

serve: $(VENV)/.installed web/node_modules/.installed
	$(BIN)/livesell serve

# The storefront, hub (with the SDKs' recovery) and attribution suites run a second time against
# a real Valkey Cluster (3 primaries, 3 replicas): LIVESELL_TEST_REDIS=cluster, tests/conftest.py.
CLUSTER_SUITES := tests/storefront tests/live tests/attribution

test: $(VENV)/.installed-dev web/node_modules/.installed $(if $(wildcard tests/js/package.json),tests/js/node_modules/.installed)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	LIVESELL_TEST_REDIS=cluster $(BIN)/python -m pytest $(CLUSTER_SUITES) $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/mypy

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $(VENV)/.installed $(VENV)/.installed-dev $@

# the Node ws peer's packages go into load_tests/node_modules (gitignored) at bench time
bench: $(VENV)/.installed-bench
	$(BIN)/python -m load_tests $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache web/node_modules
