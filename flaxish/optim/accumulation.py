"""Gradient accumulation over k micro-steps, wrapping any optimizer."""
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import (OptimizerDef, OptimizerState, check_gradients,
                                initial_state)
from flaxish.optim.wrapper import OptimizerWrapper

__all__ = ['GradientAccumulation']


@struct.dataclass
class _AccumulationHyperParams:
  inner: Any


@struct.dataclass
class _AccumulationState:
  inner: Any  # the wrapped optimizer's state
  grad_sum: Any  # gradients summed since the last update (target structure)


def _acc_dtype(x):
  dtype = jnp.result_type(x)
  if jnp.issubdtype(dtype, jnp.floating):
    return jnp.promote_types(dtype, jnp.float32)
  return dtype


class GradientAccumulation(OptimizerWrapper):
  """Sums gradients over `steps` calls, then applies their mean once (so,
  with a mean loss, the update of one step on all the micro-batches); the
  target is unchanged in between. Sums are kept in at least float32; under
  `jit` the update runs every `steps` calls (`lax.cond`).

  Arguments:
    wrapped_optimizer: the `OptimizerDef` applied every `steps` calls.
    steps: the number of micro-steps per update (a Python int >= 1).
  """

  def __init__(self, wrapped_optimizer: OptimizerDef, steps: int):
    if not isinstance(steps, int) or steps < 1:
      raise ValueError(f'GradientAccumulation: steps must be an int >= 1, '
                       f'got {steps!r}')
    super().__init__(wrapped_optimizer,
                     _AccumulationHyperParams(wrapped_optimizer.hyper_params))
    self.steps = steps

  def init_state(self, params):
    grad_sum = jax.tree_util.tree_map(
        lambda p: jnp.zeros(jnp.shape(p), _acc_dtype(p)), params)
    return initial_state(_AccumulationState(
        self.wrapped_optimizer.init_state(params), grad_sum))

  def apply_gradient(self, hyper_params, params, state, grads):
    self.check_hyper_params(hyper_params)
    check_gradients(params, grads)
    acc = state.param_states
    grad_sum = jax.tree_util.tree_map(lambda a, g: a + g.astype(a.dtype),
                                      acc.grad_sum, grads)
    step = state.step + 1
    k = self.steps

    def update(operands):
      params, inner, grad_sum = operands
      mean = jax.tree_util.tree_map(lambda a: a / k, grad_sum)
      new_params, new_inner = self.wrapped_optimizer.apply_gradient(
          hyper_params.inner, params, inner, mean)
      like = lambda new, old: jax.tree_util.tree_map(  # as lax.cond needs
          lambda n, o: jnp.asarray(n, jnp.result_type(o)), new, old)
      return (like(new_params, params), like(new_inner, inner),
              jax.tree_util.tree_map(jnp.zeros_like, grad_sum))

    def skip(operands):
      params, inner, grad_sum = operands
      as_arrays = lambda t: jax.tree_util.tree_map(jnp.asarray, t)
      return as_arrays(params), as_arrays(inner), grad_sum

    if k == 1:
      new_params, new_inner, grad_sum = update((params, acc.inner, grad_sum))
    else:
      new_params, new_inner, grad_sum = lax.cond(
          step % k == 0, update, skip, (params, acc.inner, grad_sum))
    return new_params, OptimizerState(
        step, _AccumulationState(new_inner, grad_sum))
