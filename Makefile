# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make run    # creates .venv, installs vaelab, trains the offline default (workdirs/default)
#   make test   # creates .venv, installs vaelab with test extras, runs the test suite
#               # (PYTEST_ARGS=--durations=0 adds pytest's own arguments)
# and, for the edit-test loop:
#   make test-fast                          # every family on 1 and 4 devices, the fast tests
#   make contract FAMILY=vae [CONFIGS=dir]  # the run contract of one family (CONFIGS: config
#                                           # files or folders outside configs/ to include)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/default

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

.PHONY: install run test test-fast contract benchmark
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m vaelab.main --config=configs/default.py --workdir=$(WORKDIR)

# Two workers, one test file each (module-scoped compiled models stay in one process). The
# last lines report the suite's CPU-minutes and a reference loop's speed (tests/conftest.py).
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS) tests

test-fast: $(VENV)/.installed
	VAELAB_CONTRACT_FAST=1 $(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS) tests

contract: $(VENV)/.installed
	@test -n "$(FAMILY)" || (echo "make contract FAMILY=<model.name> [CONFIGS=<files or folders>]"; exit 2)
	VAELAB_CONTRACT_FAMILY=$(FAMILY) VAELAB_CONTRACT_CONFIGS=$(CONFIGS) \
	  $(PY) -m pytest -q tests/test_contract.py

benchmark: $(VENV)/.installed
	$(PY) experiments/benchmark_step.py
