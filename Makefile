# Two commands for a fresh machine (Python 3.11+ with pip): `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run run-local test lint clean

$(BIN)/collector: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# Run the collector with a built-in synthetic app (logs, WebSocket, signed Stripe and GitHub events):
# every metric family fills within a minute on http://127.0.0.1:9464/metrics. Ctrl-C stops it.
run: $(BIN)/collector
	$(BIN)/collector demo

# Run the collector alone with the local defaults (config/local.env), beside an app of your own.
run-local: $(BIN)/collector
	$(BIN)/collector --env-file config/local.env

# Lint, then the whole test suite.
test: $(BIN)/collector
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(BIN)/collector
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
