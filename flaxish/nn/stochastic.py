"""Randomness for modules: `nn.stochastic(rng)` scopes and `nn.make_rng()`.

`make_rng()` returns `fold_in(rng, counter)` with the counter starting at 1.
A scope opened outside a JAX transformation cannot be used inside it: that
would hand out the same random numbers on every call (flax issue #112).
"""
import contextlib
from typing import Any, Iterator

import jax

from flaxish.nn.utils import CallStack, trace_state

__all__ = ['stochastic', 'make_rng', 'is_stochastic']


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


def make_rng() -> Any:
  """A fresh key from the innermost `nn.stochastic` scope."""
  scope = _rng_stack.top()
  if scope is None:
    raise ValueError('nn.make_rng() needs an rng: run the code inside '
                     '`with nn.stochastic(rng):`')
  if scope.trace_state != trace_state():
    raise ValueError(
        'nn.make_rng() was called inside a JAX transformation (jit, vmap, '
        'grad, scan, ...) but its `nn.stochastic(rng)` scope was opened '
        'outside it: every call would reuse the same random numbers. Pass '
        'the rng into the transformed function and open `nn.stochastic` '
        'there')
  scope.counter += 1
  return jax.random.fold_in(scope.rng, scope.counter)


def is_stochastic() -> bool:
  """True inside a `nn.stochastic` scope."""
  return bool(_rng_stack)
