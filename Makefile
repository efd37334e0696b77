# Usher — the two quick-start commands are `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080

.PHONY: serve test lint unit system-deps lock clean bench bench-quick screenshots

# The venv is rebuilt when the pinned dependencies change.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

## serve: install, then run Usher on SQLite (./usher.db) and print a demo account
serve: $(VENV)/.installed
	$(BIN)/usher serve --demo --host $(HOST) --port $(PORT)

## test: install everything (Python packages and Debian packages) and run lint, types and all tests
test: $(VENV)/.bench-installed system-deps lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: $(VENV)/.bench-installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## unit: only the fast in-process tests
unit: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow"

system-deps:
	scripts/install-system-deps

## screenshots: re-take the control panel's screenshots into docs/screenshots (real Chromium)
screenshots: $(VENV)/.installed system-deps
	USHER_UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/live/test_panel_browser.py -k screenshots

## bench: the full benchmark suite (1 M tickets, 10 M attempts; see docs/benchmarks.md)
bench: $(VENV)/.bench-installed system-deps
	$(BIN)/python -m bench.run --mode full

## bench-quick: the same steps at small sizes, in about two minutes
bench-quick: $(VENV)/.bench-installed system-deps
	$(BIN)/python -m bench.run --mode quick

$(VENV)/.bench-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $@

## lock: re-pin constraints.txt from the current venv
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^usher' > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
