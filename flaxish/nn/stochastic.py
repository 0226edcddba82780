"""Randomness for modules: `nn.stochastic(rng)`, `nn.make_rng()`, dropout.

`make_rng()` returns `fold_in(rng, counter)` with the counter starting at 1.
A scope opened outside a JAX transformation cannot be used inside it: that
would hand out the same random numbers on every call (flax issue #112).
"""
import contextlib
from typing import Any, Iterator, Optional

import jax
from jax import lax
import jax.numpy as jnp

from flaxish.nn import frame as frame_lib
from flaxish.nn._util import CallStack, is_tracer, trace_state

__all__ = ['stochastic', 'make_rng', 'is_stochastic', 'dropout']

Array = Any


class _RNGScope:
  __slots__ = ('rng', 'counter', 'trace_state')

  def __init__(self, rng: Any):
    self.rng = rng
    self.counter = 0
    self.trace_state = trace_state()


_rng_stack: CallStack[_RNGScope] = CallStack()


@contextlib.contextmanager
def stochastic(rng: Any) -> Iterator[None]:
  """Opens a scope in which `make_rng()` derives keys from `rng`."""
  if rng is None or not hasattr(rng, 'dtype'):
    raise TypeError('nn.stochastic expects a PRNG key (jax.random.PRNGKey or '
                    f'jax.random.key), got {type(rng).__name__}')
  with _rng_stack.scope(_RNGScope(rng)):
    yield


def _caller() -> str:
  frame = frame_lib.module_stack.top()
  return f' (asked by module "{frame.path}")' if frame is not None else ''


def make_rng() -> Any:
  """A fresh key from the innermost `nn.stochastic` scope."""
  scope = _rng_stack.top()
  if scope is None:
    raise ValueError(f'nn.make_rng(){_caller()} needs an rng: run the code '
                     'inside `with nn.stochastic(rng):`, or pass '
                     'deterministic=True where it is dropout')
  if scope.trace_state != trace_state():
    raise ValueError(
        f'nn.make_rng(){_caller()} was called inside a JAX transformation '
        '(jit, vmap, grad, scan, ...) but its `nn.stochastic(rng)` scope was '
        'opened outside it: every call would reuse the same random numbers. '
        'Pass the rng into the transformed function and open '
        '`nn.stochastic` there')
  scope.counter += 1
  return jax.random.fold_in(scope.rng, scope.counter)


def is_stochastic() -> bool:
  """True inside a `nn.stochastic` scope."""
  return bool(_rng_stack)


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
      rng = make_rng()
    keep_prob = 1. - rate
    keep = jax.random.bernoulli(rng, keep_prob, inputs.shape)
    return lax.select(keep, inputs / jnp.asarray(keep_prob, inputs.dtype),
                      jnp.zeros_like(inputs))
