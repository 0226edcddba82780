"""Tests of nn.dropout: inverted dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn


def test_rate_zero_and_deterministic_are_the_identity():
  x = jnp.arange(6.)
  assert nn.dropout(x, 0.) is x  # no rng needed
  assert nn.dropout(x, 0.5, deterministic=True) is x


def test_inverted_dropout_keeps_about_one_minus_rate_and_rescales():
  x = jnp.full((100, 100), 2.)
  y = np.asarray(nn.dropout(x, 0.3, rng=jax.random.PRNGKey(0)))
  kept = y != 0
  np.testing.assert_allclose(y[kept], 2. / 0.7, rtol=1e-6)
  assert abs(kept.mean() - 0.7) < 0.03  # 10000 draws: std of the mean 0.005
  # The same key gives the same mask; its exact values are jax.random's.
  keep = jax.random.bernoulli(jax.random.PRNGKey(0), 0.7, (100, 100))
  np.testing.assert_array_equal(kept, keep)


def test_rate_one_drops_everything():
  np.testing.assert_array_equal(
      nn.dropout(jnp.ones(4), 1., rng=jax.random.PRNGKey(0)), np.zeros(4))


def test_dropout_uses_make_rng_and_typed_keys():
  x = jnp.ones((50,))
  with nn.stochastic(jax.random.key(3)):
    a = nn.dropout(x, 0.5)
    b = nn.dropout(x, 0.5)
  assert not np.array_equal(a, b)  # two make_rng() draws
  expected = jax.random.bernoulli(
      jax.random.fold_in(jax.random.key(3), 1), 0.5, (50,))
  np.testing.assert_array_equal(np.asarray(a) != 0, expected)


def test_dropout_in_bf16_keeps_the_dtype_and_gradient_is_the_mask():
  x = jnp.ones((8,), jnp.bfloat16)
  rng = jax.random.PRNGKey(1)
  y = nn.dropout(x, 0.5, rng=rng)
  assert y.dtype == jnp.bfloat16
  g = jax.grad(lambda x: nn.dropout(x, 0.5, rng=rng).sum())(jnp.ones(8))
  np.testing.assert_array_equal(g, np.where(np.asarray(y) != 0, 2., 0.))


def test_dropout_errors():
  with pytest.raises(ValueError, match='nn.make_rng\\(\\) needs an rng'):
    nn.dropout(jnp.ones(3), 0.5)
  with pytest.raises(ValueError, match=r'dropout: rate must be in \[0, 1\], '
                     'got 1.5'):
    nn.dropout(jnp.ones(3), 1.5, rng=jax.random.PRNGKey(0))
