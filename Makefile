# Usher — the two quick-start commands are `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: serve test lint unit system-deps lock clean

# The venv is rebuilt when the pinned dependencies change.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

## serve: install, then run Usher on SQLite (./usher.db) and print a demo account
serve: $(VENV)/.installed
	$(BIN)/usher serve --demo --host $(HOST) --port $(PORT)

## test: install everything (Python packages, php-cli/php-curl) and run lint, types and all tests
test: $(VENV)/.installed system-deps lint
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

## unit: only the fast in-process tests
unit: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow"

system-deps:
	scripts/install-system-deps

## lock: re-pin constraints.txt from the current venv
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^usher' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
