# Two commands on a fresh machine:  `make demo` (the offline quickstart) and `make test` (the test suite).
# Each creates the virtualenv and installs what it needs first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alignflow-installed
# Prefect state (the temporary server's database) stays inside the checkout. The tests never use it: each
# session gets its own PREFECT_HOME, cache and stack directory (tests/conftest.py), so a `make demo` stack
# left up and an earlier or interrupted run's state cannot change their verdict.
export PREFECT_HOME ?= $(CURDIR)/.alignflow/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo demo-embedded stack-up stack-down test test-fast clean

install: $(STAMP)

# torch first, from the CPU wheel pinned in pyproject.toml: asked for later by another package, pip would
# otherwise pick a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

# The quickstart against the local stack (S3, MLflow server, Prefect server and workers on loopback); the stack
# stays up afterwards so the UIs can be browsed: `make stack-down` stops it.
demo: install
	@mkdir -p $(PREFECT_HOME)
	$(VENV)/bin/alignflow stack up
	$(VENV)/bin/alignflow run --config configs/quickstart.yaml $(ARGS)
	@$(VENV)/bin/alignflow stack status

# The same pipeline with no services at all: temporary Prefect server, SQLite MLflow store.
demo-embedded: install
	@mkdir -p $(PREFECT_HOME)
	$(VENV)/bin/alignflow run --no-stack --config configs/quickstart.yaml $(ARGS)

stack-up: install
	$(VENV)/bin/alignflow stack up

stack-down:
	$(VENV)/bin/alignflow stack down

# The browser test needs Debian's chromium (installed by .ci/install-browser.sh as root); without it that
# one test is skipped, everything else runs.
test: install
	@mkdir -p $(PREFECT_HOME)
	-@bash .ci/install-browser.sh
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	-$(VENV)/bin/alignflow stack down
	rm -rf runs .alignflow .pytest_cache
