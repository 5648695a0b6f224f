# bi_platform — the README's commands. `make run` and `make test` work on a fresh clone:
# they create .venv, install what is missing and start the services they need.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BI_PLATFORM_HOME ?= .bi_platform
export BI_PLATFORM_HOME
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000
PYTEST_ARGS ?=
PROFILE ?= default
LOAD_SERVICES_ENV := set -a && . "$(BI_PLATFORM_HOME)/services.env" && set +a

.PHONY: help run test ui up down status lint format clean system-deps python-check update-snapshot

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

python-check:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python >= 3.11 is required, $(PYTHON) is " + sys.version.split()[0])'

system-deps:
	@scripts/ensure-system-deps.sh

$(BIN)/python: | python-check
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip > $(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }

# One stamp per install flavour; pyproject.toml changes trigger a reinstall.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	@echo ">> installing bi_platform into $(VENV) (log: $(VENV)/pip.log)"
	@$(BIN)/pip install -e . >> $(VENV)/pip.log 2>&1 || { tail -n 60 $(VENV)/pip.log; exit 1; }
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	@echo ">> installing bi_platform[dev] into $(VENV) (log: $(VENV)/pip.log)"
	@$(BIN)/pip install -e '.[dev]' >> $(VENV)/pip.log 2>&1 || { tail -n 60 $(VENV)/pip.log; exit 1; }
	@touch $@ $(VENV)/.installed-run

up: system-deps $(VENV)/.installed-run  ## start local services (PostgreSQL) and write services.env
	$(BIN)/bi-platform up
	@# Dagster's CLI loads ./.env: link it to services.env (never over a .env of your own).
	@if [ ! -e .env ] || [ -L .env ]; then ln -sfn "$(BI_PLATFORM_HOME)/services.env" .env; \
	else echo ">> .env exists and is not ours: load $(BI_PLATFORM_HOME)/services.env yourself"; fi

run: up  ## install, start services, seed sample sources (PROFILE=default), materialize every asset
	$(BIN)/bi-platform seed --profile $(PROFILE)
	$(LOAD_SERVICES_ENV) && $(BIN)/bi-platform materialize
	@$(BIN)/bi-platform status

test: system-deps $(VENV)/.installed-dev  ## install dev deps, lint, check the import layers, run the test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

ui: up  ## the Dagster UI (dagster dev: webserver + daemon) on http://$(UI_HOST):$(UI_PORT)
	@# default signal dispositions: started from a background job, make's children would
	@# inherit SIGINT ignored; bi-platform ui turns the signals make and the terminal both
	@# deliver into one stop request for dagster dev
	$(LOAD_SERVICES_ENV) && exec env --default-signal=INT,TERM \
	  $(BIN)/bi-platform ui --host $(UI_HOST) --port $(UI_PORT) --workspace workspace.yaml

update-snapshot: $(VENV)/.installed-dev  ## refresh the asset-graph snapshot after a deliberate change
	$(BIN)/pytest -q bi_platform_tests/test_asset_graph.py --snapshot-update

status:  ## what runs (JSON)
	@$(BIN)/bi-platform status --json

down:  ## stop local services
	@if [ -x $(BIN)/bi-platform ]; then $(BIN)/bi-platform down; fi

lint: $(VENV)/.installed-dev  ## ruff check + format check + import layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(VENV)/.installed-dev  ## ruff fix + format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: down  ## stop services, remove .venv, $(BI_PLATFORM_HOME) and its PostgreSQL cluster
	@# as root under a directory the postgres user cannot enter, the cluster lives in /var/lib
	@if [ -x $(BIN)/bi-platform ]; then \
	  data="$$($(BIN)/bi-platform status --json | $(BIN)/python -c \
	    'import json, sys; print(json.load(sys.stdin)["postgres"].get("data_dir") or "")')"; \
	  case "$$data" in /var/lib/bi_platform/postgres/*) rm -rf "$$(dirname "$$data")";; esac; \
	fi
	if [ -L .env ]; then rm .env; fi
	rm -rf $(VENV) $(BI_PLATFORM_HOME) .pytest_cache .ruff_cache build *.egg-info
