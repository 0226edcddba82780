"""Helpers that keep 2020 JAX code working (`flaxish.upgrade` rewrites to them):
`jit` as in 2020, and the `jax.test_util` helpers that left the public API.
"""
import functools
import unittest
import warnings

import jax
import numpy as np

__all__ = ['jit', 'JaxTestCase', 'check_eq', 'check_close']


class _ByIdentity:
  """Wraps an unhashable static value; hashes and compares by identity."""

  def __init__(self, value):
    self.value = value

  def __hash__(self):
    return id(self.value)

  def __eq__(self, other):
    return isinstance(other, _ByIdentity) and other.value is self.value


def jit(fun, static_argnums=(), **kwargs):
  """`jax.jit` that, like 2020 JAX, passes an unhashable static argument (dict,
  list) by identity: the same object reuses the compiled function, a new one
  compiles again. It warns once per argument position.
  """
  static = ((static_argnums,) if isinstance(static_argnums, int) else
            tuple(static_argnums))
  warned = set()  # argument positions warned about

  def unwrapped(*args, **kw):
    args = (a.value if isinstance(a, _ByIdentity) else a for a in args)
    return fun(*args, **kw)

  compiled = jax.jit(unwrapped, static_argnums=static, **kwargs)

  @functools.wraps(fun)
  def wrapper(*args, **kw):
    args = list(args)
    for i in static:
      if not -len(args) <= i < len(args):
        continue  # not passed by position
      i %= len(args)
      try:
        hash(args[i])
      except TypeError:
        if i not in warned:
          warned.add(i)
          warnings.warn(
              f'static argument {i} of {getattr(fun, "__name__", fun)} is '
              f'an unhashable {type(args[i]).__name__}; it is compared by '
              'identity (a new object recompiles). Pass a hashable value '
              '(e.g. a tuple) to use jax.jit directly.', stacklevel=2)
        args[i] = _ByIdentity(args[i])
    return compiled(*args, **kw)

  return wrapper


def _pairs(xs, ys):
  x_leaves, x_tree = jax.tree_util.tree_flatten(xs)
  y_leaves, y_tree = jax.tree_util.tree_flatten(ys)
  if x_tree != y_tree:
    raise AssertionError(f'tree structures differ: {x_tree} vs {y_tree}')
  return [(np.asarray(x), np.asarray(y)) for x, y in zip(x_leaves, y_leaves)]


def check_close(xs, ys, atol=1e-6, rtol=1e-6, err_msg=''):
  """Asserts two pytrees have the same structure and leaves within atol/rtol."""
  for x, y in _pairs(xs, ys):
    np.testing.assert_allclose(x, y, atol=atol, rtol=rtol, err_msg=err_msg)


def check_eq(xs, ys, err_msg=''):
  """Asserts two pytrees have the same structure and equal leaves."""
  check_close(xs, ys, atol=0, rtol=0, err_msg=err_msg)


class JaxTestCase(unittest.TestCase):
  """`unittest.TestCase` with the pytree assertions of 2020's `jtu`."""
  # pylint: disable=invalid-name

  def assertAllClose(self, x, y, check_dtypes=True, atol=1e-6, rtol=1e-6):
    for a, b in _pairs(x, y):
      if check_dtypes:
        self.assertEqual(a.dtype, b.dtype)
      np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)

  assertArraysAllClose = assertAllClose

  def assertArraysEqual(self, x, y, check_dtypes=True):
    self.assertAllClose(x, y, check_dtypes, atol=0, rtol=0)
