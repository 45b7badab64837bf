# The SMS bridge. `make help` lists what each target does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help run test lint format bench clean

help: ## List the targets and what they do
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) ## Start web and worker (with SQLite and a bundled Redis when none is configured)
	$(BIN)/python -m webhooks.devserver

test: $(STAMP) ## Run the whole test suite (real Redis, SQLite, and PostgreSQL when reachable)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## Check style and types (ruff, mypy)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## Run the benchmarks in bench/ and print their ratios
	$(BIN)/python -m bench

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
