"""Inverted dropout: `nn.dropout`."""
from typing import Any, Optional

import jax
from jax import lax
import jax.numpy as jnp

from flaxish.nn import stochastic
from flaxish.nn.utils import is_tracer

__all__ = ['dropout']

Array = Any


def dropout(inputs: Array, rate: float, deterministic: bool = False,
            rng: Optional[Any] = None) -> Array:
  """Zeroes each element with probability `rate`, scaling the rest by
  `1 / (1 - rate)` (inverted dropout), so the expectation is unchanged.

  Arguments:
    inputs: an array.
    rate: the drop probability, in `[0, 1]`. `rate == 0` returns `inputs`
      unchanged (and draws no rng); `rate == 1` returns zeros.
    deterministic: if True, return `inputs` unchanged (evaluation).
    rng: a PRNG key (`jax.random.PRNGKey` or `jax.random.key`); by default
      `nn.make_rng()`, which needs an enclosing `nn.stochastic(rng)` scope.
  Returns:
    An array of the shape and dtype of `inputs`.
  """
  with jax.named_scope('dropout'):
    known_rate = not is_tracer(rate)
    if known_rate and not 0. <= rate <= 1.:
      raise ValueError(f'dropout: rate must be in [0, 1], got {rate}')
    if deterministic or (known_rate and rate == 0.):
      return inputs
    inputs = jnp.asarray(inputs)
    if known_rate and rate == 1.:
      return jnp.zeros_like(inputs)
    if rng is None:
      rng = stochastic.make_rng()
    keep_prob = 1. - rate
    keep = jax.random.bernoulli(rng, keep_prob, inputs.shape)
    return lax.select(keep, inputs / jnp.asarray(keep_prob, inputs.dtype),
                      jnp.zeros_like(inputs))
