# Two commands for a fresh machine (Python 3.11+ with pip): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint clean

$(BIN)/collector: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# Run the collector with the embedded local defaults (config/local.env): /metrics on :9464.
run: $(BIN)/collector
	$(BIN)/collector --env-file config/local.env

# Lint, then the whole test suite.
test: $(BIN)/collector
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(BIN)/collector
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
