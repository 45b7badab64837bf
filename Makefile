# The SMS bridge. `make help` lists what each target does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The locks: exact versions with their hashes. requirements.txt is what Heroku installs (the
# service's dependencies); requirements-dev.txt adds the tools and tests, at the same versions.
LOCK := requirements.txt
DEV_LOCK := requirements-dev.txt
# uv pip compile, for every platform and Python the project supports, each file with its hash.
COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --universal --python-version 3.11 \
	--generate-hashes --no-strip-markers --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)

.DEFAULT_GOAL := help
.PHONY: help run test soak reliability-report lint format bench lock clean

help: ## List the targets and what they do
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	@$(BIN)/pip check >/dev/null || { $(BIN)/pip check; \
		echo "pyproject.toml asks for more than $(DEV_LOCK) holds: run make lock"; exit 1; }
	touch $(STAMP)

run: $(STAMP) ## Start web and worker (with SQLite and a bundled Redis when none is configured)
	$(BIN)/python -m webhooks.devserver

test: $(STAMP) ## Run the whole test suite (real Redis, SQLite, and PostgreSQL when reachable)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

soak: $(STAMP) ## Run tests/reliability at full size (20,000 SMS in, 10,000 out, faults; ~1 hour)
	RELIABILITY_SIZE=soak $(BIN)/python -m pytest tests/reliability --timeout 3600 $(PYTEST_ARGS)

reliability-report: $(STAMP) ## Print the table of faults and attacks from the last test or soak run
	$(BIN)/python -m tests.reliability.report

lint: $(STAMP) ## Check style and types (ruff, mypy)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make lock` needs only uv, so it works while pyproject asks for something the locks lack.
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv

lock: $(BIN)/uv ## Pin pyproject's dependencies in the locks (UPGRADE=1: newest allowed versions)
	$(COMPILE) --output-file $(LOCK)
	$(COMPILE) --extra dev --constraint $(LOCK) --output-file $(DEV_LOCK)

bench: $(STAMP) ## Run the benchmarks in bench/ and print their ratios
	$(BIN)/python -m bench

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) instance .pytest_cache .mypy_cache .ruff_cache
