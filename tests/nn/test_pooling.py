"""Tests of flaxish.nn.pooling against a NumPy implementation."""
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from tests.nn._layer_testing import check_grads_fd
from tests.nn._layer_testing import rand


def _np_pool(x, reduce, pad_value, window, strides, padding):
  """Reduces windows of `(batch, spatial..., features)` with NumPy."""
  n = len(window)
  strides = strides or (1,) * n
  if padding == 'VALID':
    pads = [(0, 0)] * n
  elif padding == 'SAME':
    pads = []
    for s, k, st in zip(x.shape[1:-1], window, strides):
      total = max((-(-s // st) - 1) * st + k - s, 0)
      pads.append((total // 2, total - total // 2))
  else:
    pads = list(padding)
  x = np.pad(np.asarray(x, np.float64), [(0, 0)] + pads + [(0, 0)],
             constant_values=pad_value)
  out_sp = [(s - k) // st + 1 for s, k, st in zip(x.shape[1:-1], window,
                                                  strides)]
  y = np.zeros([x.shape[0]] + out_sp + [x.shape[-1]])
  for idx in np.ndindex(*out_sp):
    win = tuple(slice(i * st, i * st + k)
                for i, st, k in zip(idx, strides, window))
    y[(slice(None),) + idx] = reduce(x[(slice(None),) + win],
                                     axis=tuple(range(1, n + 1)))
  return y


CASES = [
    ((2, 6, 3), (2,), None, 'VALID'),
    ((2, 7, 3), (3,), (2,), 'SAME'),
    ((1, 5, 6, 2), (2, 3), (2, 2), 'VALID'),
    ((1, 5, 6, 2), (3, 3), (2, 1), 'SAME'),
    ((1, 4, 4, 2), (2, 2), (1, 2), ((1, 0), (0, 1))),
    ((1, 3, 4, 3, 1), (2, 2, 2), None, 'VALID'),
]


@pytest.mark.parametrize('shape,window,strides,padding', CASES)
def test_max_pool_matches_numpy(shape, window, strides, padding):
  x = rand(shape)
  y = nn.max_pool(x, window, strides=strides, padding=padding)
  np.testing.assert_allclose(
      y, _np_pool(x, np.max, -np.inf, window, strides, padding), rtol=1e-6)


@pytest.mark.parametrize('shape,window,strides,padding', CASES)
def test_avg_pool_matches_numpy_counting_padded_zeros(shape, window, strides,
                                                      padding):
  x = rand(shape)
  y = nn.avg_pool(x, window, strides=strides, padding=padding)
  expected = _np_pool(x, np.sum, 0., window, strides, padding) / np.prod(
      window)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_pool_with_a_custom_reduction_and_unbatched_input():
  x = rand((5, 4, 2))
  y = nn.pooling.pool(x, 1., lax.mul, (2, 2), (1, 1), 'VALID')
  expected = _np_pool(x[None], np.prod, 1., (2, 2), (1, 1), 'VALID')[0]
  np.testing.assert_allclose(y, expected, rtol=1e-5)
  assert nn.max_pool(x, (2, 2)).shape == (4, 3, 2)


def test_pooling_gradients():
  x = jnp.asarray(rand((1, 4, 4, 2)))
  check_grads_fd(lambda x: nn.avg_pool(x, (2, 2), padding='SAME'), (x,))
  # Max pooling routes the cotangent to the maximum of each window.
  g = jax.grad(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)).sum())(x)
  expected = np.zeros(x.shape)
  xn = np.asarray(x)
  for i in range(2):
    for j in range(2):
      for c in range(2):
        win = xn[0, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
        a, b = np.unravel_index(np.argmax(win), (2, 2))
        expected[0, 2 * i + a, 2 * j + b, c] = 1.
  np.testing.assert_array_equal(g, expected)


def test_pooling_bf16_keeps_the_dtype():
  x = rand((1, 4, 4, 2))
  for pool, reduce, pad in ((nn.max_pool, np.max, -np.inf),
                            (nn.avg_pool, np.mean, 0.)):
    y = pool(jnp.asarray(x, jnp.bfloat16), (2, 2), padding='VALID')
    assert y.dtype == jnp.bfloat16
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32)
    np.testing.assert_allclose(
        np.asarray(y, np.float32),
        _np_pool(xb, reduce, pad, (2, 2), None, 'VALID'), rtol=1e-2,
        atol=1e-2)


def test_max_pool_under_jit_and_integer_input():
  x = np.arange(12, dtype=np.int32).reshape(1, 6, 2) - 20
  y = jax.jit(lambda x: nn.max_pool(x, (2,), (2,), 'SAME'))(x)
  assert y.dtype == jnp.int32
  np.testing.assert_array_equal(y, x.reshape(1, 3, 2, 2).max(2))


def test_pool_rejects_wrong_rank_and_padding():
  with pytest.raises(ValueError, match=r'pool\(window_shape=\(2, 2\)\) '
                     r'expects inputs of shape \(batch, 2 window dims, '
                     r'features\) .* got shape \(3, 4\)'):
    nn.max_pool(jnp.ones((3, 4)), (2, 2))
  with pytest.raises(ValueError, match='has 1 \\(low, high\\) pairs'):
    nn.avg_pool(jnp.ones((1, 4, 4, 1)), (2, 2), padding=((1, 1),))


@pytest.mark.parametrize('pool_fn', [nn.max_pool, nn.avg_pool])
def test_window_larger_than_the_input_is_an_error(pool_fn):
  x = jnp.ones((1, 8, 5, 3))
  with pytest.raises(ValueError, match=(
      r"^pool\(window_shape=\(9, 2\)\): the window is larger than the input "
      r'of shape \(1, 8, 5, 3\) along window dim 0: 8 positions \(padding '
      r'included\) for a window of 9, so the output would be empty; use a '
      r"smaller window, padding='SAME', or pad the input$")):
    pool_fn(x, (9, 2))
  with pytest.raises(ValueError, match=(
      r'the input of shape \(8, 5, 3\) along window dim 1: 6 positions')):
    pool_fn(x[0], (2, 7), padding=((0, 0), (1, 0)))
  # A window that fits exactly, after padding, gives one output position.
  y = pool_fn(x, (8, 6), padding=((0, 0), (1, 0)))
  assert y.shape == (1, 1, 1, 3)
  expected = _np_pool(np.ones((1, 8, 5, 3)),
                      np.max if pool_fn is nn.max_pool else np.mean,
                      -np.inf if pool_fn is nn.max_pool else 0.,
                      (8, 6), None, ((0, 0), (1, 0)))
  np.testing.assert_allclose(y, expected)
  assert pool_fn(x, (9, 9), padding='SAME').shape == x.shape


def test_pool_rejects_non_positive_window_and_strides():
  x = jnp.ones((1, 4, 4, 1))
  with pytest.raises(ValueError, match=r'^pool\(window_shape=\(0, 2\)\): '
                     r'window_shape must be positive ints, got \(0, 2\)$'):
    nn.max_pool(x, (0, 2))
  with pytest.raises(ValueError, match=r'^pool\(window_shape=\(2, 2\)\): '
                     r'strides must be positive ints, got \(2, -1\)$'):
    nn.avg_pool(x, (2, 2), strides=(2, -1))
