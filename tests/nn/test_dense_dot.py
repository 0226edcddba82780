"""Tests of flaxish.nn._dense_dot against lax.dot_general and NumPy."""
import functools
import re

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish.nn._dense_dot import dense_dot

# (input shape, contracted axes, feature shape)
CASES = [((6, 5), (1,), (3,)),
         ((2, 4, 5), (2,), (3,)),
         ((2, 3, 4, 5), (2, 3), (2, 3)),
         ((4, 3, 5), (0,), (2,)),
         ((3, 4, 5), (2, 0), (6,)),
         ((5,), (0,), (3,))]


def _inputs(shape, axis, features, seed=0):
  rng = np.random.RandomState(seed)
  x = rng.randn(*shape).astype(np.float32)
  k = rng.randn(*([shape[a] for a in axis] + list(features))).astype(
      np.float32)
  return x, k


def _reference(x, k, axis):
  """The product in float64 NumPy: contracted axes moved last, flattened."""
  free = [a for a in range(x.ndim) if a not in axis]
  n_in = int(np.prod([x.shape[a] for a in axis]))
  x2 = np.transpose(x, free + list(axis)).astype(np.float64).reshape(-1, n_in)
  y = x2 @ k.astype(np.float64).reshape(n_in, -1)
  return y.reshape([x.shape[a] for a in free] + list(k.shape[len(axis):]))


def _plain(x, k, axis):
  return lax.dot_general(x, k, ((axis, tuple(range(len(axis)))), ((), ())))


@pytest.mark.parametrize('shape,axis,features', CASES)
def test_values_match_numpy(shape, axis, features):
  x, k = _inputs(shape, axis, features)
  y = dense_dot(x, k, axis)
  np.testing.assert_allclose(y, _reference(x, k, axis), rtol=1e-5, atol=1e-5)
  assert y.shape == _plain(x, k, axis).shape


@pytest.mark.parametrize('shape,axis,features', CASES)
def test_gradients_match_numpy(shape, axis, features):
  """d/dk sum(g * y) = x^T g and d/dx = g k^T, in float64 NumPy."""
  x, k = _inputs(shape, axis, features)
  g = np.random.RandomState(1).randn(*_reference(x, k, axis).shape).astype(
      np.float32)
  gx, gk = jax.grad(lambda x, k: jnp.sum(g * dense_dot(x, k, axis)),
                    argnums=(0, 1))(x, k)
  # Both are linear, so the gradient is the NumPy product against g.
  gx_ref = np.zeros(x.shape)
  gk_ref = np.zeros(k.shape)
  for index in np.ndindex(*x.shape):
    e = np.zeros(x.shape)
    e[index] = 1
    gx_ref[index] = np.sum(g * _reference(e, k, axis))
  for index in np.ndindex(*k.shape):
    e = np.zeros(k.shape)
    e[index] = 1
    gk_ref[index] = np.sum(g * _reference(x, e, axis))
  np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(gk, gk_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('shape,axis,features', CASES[:4])
def test_forward_mode_and_second_order_match_dot_general(shape, axis,
                                                         features):
  x, k = _inputs(shape, axis, features)
  dx, dk = _inputs(shape, axis, features, seed=2)

  def loss(product):
    return lambda x, k: jnp.sum(jnp.tanh(product(x, k, axis)))

  mine, plain = loss(dense_dot), loss(_plain)
  y, t = jax.jvp(mine, (x, k), (dx, dk))
  y_ref, t_ref = jax.jvp(plain, (x, k), (dx, dk))
  np.testing.assert_allclose(y, y_ref, rtol=1e-5)
  np.testing.assert_allclose(t, t_ref, rtol=1e-4, atol=1e-4)
  hvp = lambda f: jax.jvp(jax.grad(f, argnums=1), (x, k), (dx, dk))[1]
  np.testing.assert_allclose(hvp(mine), hvp(plain), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(jax.hessian(mine, argnums=1)(x, k),
                             jax.hessian(plain, argnums=1)(x, k),
                             rtol=1e-4, atol=1e-4)


def test_gradient_with_respect_to_one_operand_only():
  x, k = _inputs((4, 3), (1,), (2,))
  gk = jax.grad(lambda k: jnp.sum(dense_dot(x, k, (1,))))(k)
  gx = jax.grad(lambda x: jnp.sum(dense_dot(x, k, (1,))))(x)
  np.testing.assert_allclose(gk, np.outer(x.sum(0), np.ones(2)), rtol=1e-5)
  np.testing.assert_allclose(gx, np.outer(np.ones(4), k.sum(1)), rtol=1e-5)


def test_vmap_and_jit():
  x, k = _inputs((3, 4, 5), (2,), (2,))
  f = jax.jit(jax.vmap(lambda x: dense_dot(x, k, (1,))))
  np.testing.assert_allclose(f(x), np.einsum('bij,jk->bik', x, k),
                             rtol=1e-5, atol=1e-5)
  g = jax.grad(lambda k: jnp.sum(jax.vmap(lambda x: dense_dot(x, k, (1,)))(x)
                                 ** 2))(k)
  g_ref = jax.grad(lambda k: jnp.sum(jnp.einsum('bij,jk->bik', x, k) ** 2))(k)
  np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)


def test_bfloat16_and_precision_pass_through():
  x, k = _inputs((8, 4), (1,), (3,))
  xb, kb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(k, jnp.bfloat16)
  y = dense_dot(xb, kb, (1,), precision=lax.Precision.HIGHEST)
  assert y.dtype == jnp.bfloat16
  gk = jax.grad(lambda k: jnp.sum(dense_dot(xb, k, (1,)).astype(
      jnp.float32)))(kb)
  assert gk.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(gk, np.float32),
                             np.outer(np.asarray(xb, np.float32).sum(0),
                                      np.ones(3)), rtol=2e-2)


def _scan_grad_hlo(product):
  """The CPU program of a gradient through a `lax.scan` over 5 steps whose
  body multiplies a `(16, 12)` input by the kernel."""
  xs = jnp.ones((5, 16, 8))
  k = jnp.ones((12, 4))

  def loss(k):
    def body(h, x):
      h = jnp.tanh(product(jnp.concatenate([x, h], 1), k, (1,)))
      return h, None
    return jnp.sum(lax.scan(body, jnp.zeros((16, 4)), xs)[0])

  return jax.jit(jax.grad(loss)).trace(k).lower(
      lowering_platforms=('cpu',)).as_text()


def _tensor_types(hlo):
  return sorted(re.findall(r'tensor<[0-9a-z]*>', hlo))


def test_cpu_form_saves_the_transpose_instead_of_the_input():
  """On CPU the backward pass reads a written-out x^T: the scan saves
  `(5, 12, 16)` per-step transposes, not the `(5, 16, 12)` inputs."""
  hlo = _scan_grad_hlo(dense_dot)
  assert 'optimization_barrier' in hlo
  assert 'tensor<5x12x16xf32>' in hlo
  assert 'tensor<5x16x12xf32>' not in hlo
  assert 'tensor<5x16x12xf32>' in _scan_grad_hlo(_plain)


def test_other_platforms_get_the_plain_program(monkeypatch):
  from flaxish.nn import _dense_dot  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(_dense_dot, '_cpu_form', lambda: False)
  hlo = _scan_grad_hlo(dense_dot)
  assert 'optimization_barrier' not in hlo
  assert _tensor_types(hlo) == _tensor_types(_scan_grad_hlo(_plain))


def test_plain_flag_and_initialization_skip_the_custom_rule(monkeypatch):
  """`plain=True` (what Dense passes while initializing) traces
  `lax.dot_general` itself: no custom_jvp, no barrier in the gradient."""
  from flaxish import nn  # pylint: disable=g-import-not-at-top
  from flaxish.nn import _dense_dot  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(_dense_dot, '_cpu_form', lambda: True)  # any backend
  x, k = _inputs((16, 8), (1,), (4,))
  loss = lambda k, plain: jnp.sum(dense_dot(x, k, (1,), plain=plain) ** 2)
  assert 'custom_jvp' in str(jax.make_jaxpr(loss, static_argnums=1)(k, False))
  assert 'custom_jvp' not in str(jax.make_jaxpr(loss, static_argnums=1)(k,
                                                                      True))
  grad = jax.jit(jax.grad(loss), static_argnums=1)
  np.testing.assert_allclose(grad(k, True), grad(k, False), rtol=1e-6)
  assert 'optimization_barrier' not in grad.trace(k, True).lower().as_text()

  for layer in (nn.Dense.partial(features=3),
                nn.DenseGeneral.partial(features=3, axis=-1)):
    init = jax.make_jaxpr(lambda x: layer.init(jax.random.PRNGKey(0), x))(x)
    assert 'custom_jvp' not in str(init)
    apply = jax.make_jaxpr(
        lambda p, x: layer.call(p, x))(layer.init(jax.random.PRNGKey(0),
                                                  x)[1], x)
    assert 'custom_jvp' in str(apply)


def test_forward_pass_is_the_plain_product():
  x, k = _inputs((16, 8), (1,), (4,))
  forward = jax.jit(lambda k: dense_dot(x, k, (1,))).trace(k).lower().as_text()
  assert 'optimization_barrier' not in forward


def test_jvp_rule_with_symbolic_zero_tangents():
  """The rule skips zero tangents: none, one or both of them."""
  from jax.custom_derivatives import SymbolicZero  # pylint: disable=g-import-not-at-top
  from flaxish.nn import _dense_dot  # pylint: disable=g-import-not-at-top
  x, k = _inputs((4, 3), (1,), (2,))
  dx, dk = _inputs((4, 3), (1,), (2,), seed=3)
  zero_x = SymbolicZero(jax.core.ShapedArray(x.shape, x.dtype))
  zero_k = SymbolicZero(jax.core.ShapedArray(k.shape, k.dtype))
  rule = functools.partial(_dense_dot._dense_dot_jvp, (1,), None)  # pylint: disable=protected-access
  cases = [((dx, dk), dx @ k + x @ dk), ((dx, zero_k), dx @ k),
           ((zero_x, dk), x @ dk), ((zero_x, zero_k), np.zeros((4, 2)))]
  for tangents, expected in cases:
    out, out_dot = rule((x, k), tangents)
    np.testing.assert_allclose(out, x @ k, rtol=1e-5)
    np.testing.assert_allclose(out_dot, expected, rtol=1e-5, atol=1e-6)
