"""flaxish.upgrade.compat: jit with unhashable static arguments, jax.test_util stand-ins."""
import unittest

import jax.numpy as jnp
import numpy as np
import pytest

from flaxish.upgrade import compat


def test_jit_passes_unhashable_static_arguments_by_identity():
  traces = []

  def f(x, config):
    traces.append(dict(config))
    return x * config['scale'] + len(config)

  jitted = compat.jit(f, static_argnums=1)
  config = {'scale': 3.}
  x = np.arange(4, dtype=np.float32)
  with pytest.warns(UserWarning) as record:
    out = jitted(x, config)
  assert str(record[0].message) == (
      'static argument 1 of f is an unhashable dict; it is compared by '
      'identity (a new object recompiles). Pass a hashable value (e.g. a '
      'tuple) to use jax.jit directly.')
  np.testing.assert_allclose(out, x * 3. + 1)
  jitted(x, config)                          # same object: no new trace
  assert len(traces) == 1
  np.testing.assert_allclose(jitted(x, {'scale': 2.}), x * 2. + 1)
  assert len(traces) == 2


def test_jit_with_hashable_static_arguments_is_jax_jit(recwarn):
  jitted = compat.jit(lambda x, n: x ** n, static_argnums=(-1,))
  np.testing.assert_allclose(jitted(jnp.float32(2.), 3), 8.)
  assert not recwarn.list


def test_check_eq_and_check_close():
  tree = {'a': np.ones(2), 'b': [np.zeros(1)]}
  compat.check_eq(tree, {'a': np.ones(2), 'b': [np.zeros(1)]})
  compat.check_close(tree, {'a': np.ones(2) + 1e-8, 'b': [np.zeros(1)]})
  with pytest.raises(AssertionError, match='tree structures differ'):
    compat.check_eq(tree, {'a': np.ones(2)})
  with pytest.raises(AssertionError, match='Not equal to tolerance'):
    compat.check_close(tree, {'a': np.ones(2) + 1e-3, 'b': [np.zeros(1)]})


class _Case(compat.JaxTestCase):
  __test__ = False  # run by test_jax_test_case_assertions, not by pytest

  def test_close(self):
    self.assertAllClose({'x': jnp.ones(3)}, {'x': np.ones(3, np.float32)})

  def test_dtype_mismatch(self):
    self.assertAllClose(jnp.ones(3), np.ones(3, np.float64))

  def test_unequal(self):
    self.assertArraysEqual(np.ones(3), np.ones(3) + 1e-9, check_dtypes=False)


def test_jax_test_case_assertions():
  result = unittest.TestResult()
  unittest.defaultTestLoader.loadTestsFromTestCase(_Case).run(result)
  assert result.testsRun == 3
  failed = sorted(test.id().rsplit('.', 1)[1] for test, _ in result.failures)
  assert failed == ['test_dtype_mismatch', 'test_unequal']
  assert "dtype('float32') != dtype('float64')" in dict(
      (t.id().rsplit('.', 1)[1], m) for t, m in result.failures)['test_dtype_mismatch']
