"""Gradient clipping by global norm, as a wrapper around any optimizer."""
from typing import Any

import jax
import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import OptimizerDef, check_gradients
from flaxish.optim.wrapper import OptimizerWrapper

__all__ = ['ClipByGlobalNorm', 'global_norm']


@struct.dataclass
class _ClipHyperParams:
  inner: Any
  max_norm: Any


def global_norm(tree: Any) -> jnp.ndarray:
  """The L2 norm of all leaves of `tree` together (a scalar)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x))
                      for x in jax.tree_util.tree_leaves(tree)))


class ClipByGlobalNorm(OptimizerWrapper):
  """If `|g| >= max_norm` (the L2 norm over all leaves), each gradient
  becomes `g / |g| * max_norm`; then `wrapped_optimizer` applies it. The
  state (and checkpoint) is the wrapped optimizer's.

  Arguments:
    wrapped_optimizer: the `OptimizerDef` that applies the clipped gradients.
    max_norm: the largest global norm (a hyper-parameter: can be overridden
      per step with `apply_gradient(grads, max_norm=...)`).
  """

  def __init__(self, wrapped_optimizer: OptimizerDef, max_norm: float):
    super().__init__(wrapped_optimizer,
                     _ClipHyperParams(wrapped_optimizer.hyper_params,
                                      max_norm))

  def init_state(self, params):
    return self.wrapped_optimizer.init_state(params)

  def apply_gradient(self, hyper_params, params, state, grads):
    check_gradients(params, grads)
    max_norm = hyper_params.max_norm
    norm = global_norm(grads)
    keep = norm < max_norm
    grads = jax.tree_util.tree_map(
        lambda g: jnp.where(
            keep, g, (g / norm.astype(jnp.result_type(g))) * max_norm),
        grads)
    return self.wrapped_optimizer.apply_gradient(hyper_params.inner, params,
                                                 state, grads)

  def state_dict(self, target, state):
    return self.wrapped_optimizer.state_dict(target, state)

  def restore_state(self, opt_target, opt_state, state_dict):
    return self.wrapped_optimizer.restore_state(opt_target, opt_state,
                                                state_dict)
