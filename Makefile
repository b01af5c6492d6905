# redesk: `make run` and `make test` are the two commands a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint bench audit clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## Run the server on the embedded default: SQLite in the user data directory, in-process queue,
## web desk.
run: $(STAMP)
	$(BIN)/redesk run

## Run every test (SQLite and PostgreSQL, real Redis, end-to-end stories).
test: $(STAMP)
	$(BIN)/python -m pytest

## The edit-test loop: the unit and db tiers but the slow tests (generated examples, large
## exports), the SQLite/PostgreSQL pairs on SQLite only. `make test` runs all of it.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e and not faults and not browser and not slow" \
		--databases sqlite -n 2

## ruff (rules and formatting) and mypy strict; CI fails on any finding.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Known vulnerabilities in the installed dependencies (pip-audit; needs internet access).
audit: $(STAMP)
	$(BIN)/python .ci/audit.py

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
