# rbmrec developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format typecheck demo serve bench migrate env clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv (if missing) and install rbmrec with its dev extras

test: $(STAMP) ## Run the whole test suite (SQLite and PostgreSQL)
	$(BIN)/pytest

test-fast: $(STAMP) ## Run the suite without the slow tests
	$(BIN)/pytest -m 'not slow'

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(STAMP) ## Migrate the configured database to the latest schema
	$(BIN)/rbmrec db upgrade

demo: $(STAMP) ## Quickstart: SQLite + MovieLens 100K + a trained model, served on :8000
	$(BIN)/python scripts/demo.py

serve: $(STAMP) ## Serve the API with the current configuration
	$(BIN)/rbmrec serve

bench: $(STAMP) ## Run the benchmarks (prints numbers; see docs/benchmarks.md)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

env: ## Write .env from .env.example with fresh database passwords and API keys
	$(PYTHON) scripts/make_env.py

clean: ## Remove caches and build output (keeps .venv, data and models)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
