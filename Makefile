# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: demo demo-headless test lint install browser clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## Seed history, train the forecaster, then serve the Dagster UI (:3000) and the MLflow UI (:5000).
demo: $(STAMP)
	$(BIN)/predcheck demo --home $(DAGSTER_HOME)

## The same loop without the UI; prints a summary; exit 0 only if the loop closed.
demo-headless: $(STAMP)
	$(BIN)/predcheck demo --headless --home $(DAGSTER_HOME)

## The whole test suite (unit, integration on SQLite and PostgreSQL, end to end in dagster dev + Chromium).
test: $(STAMP) browser
	$(BIN)/pytest

## Debian's Chromium for the end-to-end UI test (Playwright drives it; it never downloads a browser).
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "$(CHROMIUM) is missing: run 'sudo apt-get install -y chromium' (needed by tests/e2e)" >&2; exit 1; fi; }

lint: $(STAMP)
	$(BIN)/ruff check predcheck_dagster assets sensors io_managers mlflow_models tests benchmarks definitions.py

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache
