# Two commands for a fresh machine (Python 3.11+ with pip): `make run` and `make test`.
# Both build .venv from the hash-pinned lock (requirements/test.txt), from nothing, whenever the lock
# or pyproject.toml changed, so every machine runs exactly the versions that were tested.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/test.txt
PIP    := -m pip install --quiet --disable-pip-version-check
# pip-tools version that wrote the lock; `make lock` uses it, so a refresh changes versions, not format.
PIP_TOOLS := pip-tools==7.6.2
UV        := uv==0.13.9
COMPILE   := --quiet --strip-extras --generate-hashes --allow-unsafe --all-build-deps \
             --no-emit-index-url --no-emit-find-links --no-emit-trusted-host

.PHONY: run run-local test test-quick lint lock test-latest test-lowest clean

$(BIN)/collector: pyproject.toml $(LOCK)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python $(PIP) --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python $(PIP) --no-deps --no-build-isolation -e .
	$(BIN)/python tools/lockcheck.py $(LOCK) >/dev/null
	@touch $@

# Run the collector with a built-in synthetic app (logs, WebSocket, signed Stripe and GitHub events):
# every metric family fills within a minute on http://127.0.0.1:9464/metrics. Ctrl-C stops it.
run: $(BIN)/collector
	$(BIN)/collector demo

# Run the collector alone with the local defaults (config/local.env), beside an app of your own.
run-local: $(BIN)/collector
	$(BIN)/collector --env-file config/local.env

# Check the venv against the lock (prints the versions under test), lint, type-check (mypy strict,
# configured in pyproject.toml), then the whole suite.
test: $(BIN)/collector
	$(BIN)/python tools/lockcheck.py $(LOCK)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

# The quick tier: the pure and unit tests (marked `quick`: no servers, subprocesses or sleeps), in
# well under 30 s. For the edit loop; `make test` is what must pass before a commit lands.
test-quick: $(BIN)/collector
	$(BIN)/pytest -q -m quick

lint: $(BIN)/collector
	$(BIN)/ruff check .
	$(BIN)/mypy

# Refresh the lock to the newest releases pyproject.toml's ranges allow (commit both files after
# `make test` passes). The runtime lock is what the Docker image installs; the test lock adds the test
# extras with the same runtime versions.
lock:
	rm -rf .venv-tools && $(PYTHON) -m venv .venv-tools && .venv-tools/bin/python $(PIP) $(PIP_TOOLS)
	.venv-tools/bin/pip-compile $(COMPILE) --upgrade -o requirements/runtime.txt pyproject.toml
	.venv-tools/bin/pip-compile $(COMPILE) --upgrade --extra test -c requirements/runtime.txt \
	    -o requirements/test.txt pyproject.toml

# The whole suite on the newest releases the ranges allow, in a venv of its own: finds the next upstream
# change here before a user who `pip install`s the package does.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python $(PIP) --upgrade pip
	.venv-latest/bin/python $(PIP) --upgrade --upgrade-strategy eager -e '.[test]'
	.venv-latest/bin/python -m pip freeze --exclude-editable | tr '\n' ' ' && echo
	.venv-latest/bin/ruff check .
	.venv-latest/bin/mypy
	.venv-latest/bin/pytest -q

# The suite on the lowest versions pyproject.toml admits for every direct dependency (uv's
# lowest-direct resolution): proves the lower bounds. Lint is left to the locked ruff (`make test`):
# older ruff releases know other rules.
test-lowest:
	rm -rf .venv-tools .venv-lowest && $(PYTHON) -m venv .venv-tools && .venv-tools/bin/python $(PIP) $(UV)
	.venv-tools/bin/uv venv --quiet --python $(PYTHON) .venv-lowest
	.venv-tools/bin/uv pip install --quiet --python .venv-lowest/bin/python --resolution lowest-direct -e '.[test]'
	.venv-tools/bin/uv pip freeze --python .venv-lowest/bin/python --exclude-editable | tr '\n' ' ' && echo
	.venv-lowest/bin/pytest -q

clean:
	rm -rf $(VENV) .venv-latest .venv-lowest .venv-tools data .pytest_cache .ruff_cache
