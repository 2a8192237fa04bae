# Two commands on a fresh clone:  `make repro`  and  `make test`.
# Both create .venv when needed, install the pinned stack once, and materialize the
# built-in dataset; a second run only does what changed.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Stages run `python` and `dvc` from the venv, whichever shell started make.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup data repro test test-fast lint bench clean-venv

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check \
		-r requirements-dev.txt -c constraints.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

setup: $(STAMP)

data: setup
	$(VENV)/bin/xray-hpo ensure-data

repro: data
	$(VENV)/bin/dvc repro

# pytest-xdist: one process per core. Every test works in its own temporary folders (and
# PostgreSQL database); --dist loadfile runs each test file in one process, so a module's
# shared fixture (one dvc repro) is built once. (Not loadgroup: with pytest 9.2, xdist 3.8's
# group suffix on the node id is ignored, and a group's fixture was built in both
# processes.) --no-loadscope-reorder: files go out in the order tests/conftest.py sets
# (longest first), not by their number of tests. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# What CI runs (.ci/run): ruff, then every test; the 30 slowest are listed at the end.
test: data
	$(VENV)/bin/ruff check src stages tests bench
	$(PYTHON) -m pytest $(PYTEST_PARALLEL) --durations=30

# The everyday loop: unit tests only (no pipeline stages, no PostgreSQL, no ClearML sessions).
test-fast: setup
	$(VENV)/bin/ruff check src stages tests bench
	$(PYTHON) -m pytest tests/unit -m "not slow" -q $(PYTEST_PARALLEL)

bench: data
	$(PYTHON) bench/run_all.py

clean-venv:
	rm -rf $(VENV)
