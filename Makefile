# Two commands on a fresh machine:  `make demo` (the offline quickstart) and `make test` (the test suite).
# Each creates the virtualenv and installs what it needs first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alignflow-installed
# Prefect state (the temporary server's database) stays inside the checkout.
export PREFECT_HOME ?= $(CURDIR)/.alignflow/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast lint clean

install: $(STAMP)

# torch first, from the CPU wheel pinned in pyproject.toml: asked for later by another package, pip would
# otherwise pick a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/alignflow run --config configs/quickstart.yaml $(ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf runs .alignflow .pytest_cache
