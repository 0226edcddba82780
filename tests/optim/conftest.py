"""Shared fixtures for the optimizer tests: a small parameter tree and a
fixed sequence of gradients."""
import numpy as np
import pytest


@pytest.fixture
def params():
  rng = np.random.RandomState(0)
  return {'w': rng.randn(3, 4).astype(np.float32),
          'b': rng.randn(4).astype(np.float32)}


@pytest.fixture
def grads_seq():
  rng = np.random.RandomState(1)
  return [{'w': rng.randn(3, 4).astype(np.float32),
           'b': rng.randn(4).astype(np.float32)} for _ in range(4)]


@pytest.fixture
def run_steps():
  """`run_steps(optimizer_def, params, grads_seq, **overrides)` -> the
  optimizer after applying every gradient in turn."""
  def run(opt_def, params, grads_seq, **overrides):
    optimizer = opt_def.create(params)
    for g in grads_seq:
      optimizer = optimizer.apply_gradient(g, **overrides)
    return optimizer
  return run


@pytest.fixture
def run_optax():
  """`run_optax(tx, params, grads_seq)` -> params after the optax updates."""
  def run(tx, params, grads_seq):
    import optax  # pylint: disable=g-import-not-at-top
    state = tx.init(params)
    for g in grads_seq:
      updates, state = tx.update(g, state, params)
      params = optax.apply_updates(params, updates)
    return params
  return run


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
  assert sorted(actual) == sorted(expected)
  for k in expected:
    np.testing.assert_allclose(np.asarray(actual[k]), expected[k], rtol=rtol,
                               atol=atol, err_msg=k)


@pytest.fixture
def trees_close():
  return assert_trees_close
