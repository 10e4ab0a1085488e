# Two commands do all the set-up on a fresh machine with Python 3.11+:
#   make run    # creates .venv, installs vaelab, trains the offline default (workdirs/default)
#   make test   # creates .venv, installs vaelab with test extras, runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/default

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

.PHONY: install run test benchmark
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m vaelab.main --config=configs/default.py --workdir=$(WORKDIR)

test: $(VENV)/.installed
	# Two workers, one test file each (module-scoped compiled models stay in one process).
	$(PY) -m pytest -q -n 2 --dist loadfile tests

benchmark: $(VENV)/.installed
	$(PY) experiments/benchmark_step.py
