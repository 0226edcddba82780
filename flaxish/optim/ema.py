"""Parameter EMA (Polyak averaging) as a wrapper around any optimizer."""
from typing import Any

import jax
import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import OptimizerDef, OptimizerState, initial_state
from flaxish.optim.wrapper import OptimizerWrapper

__all__ = ['ParameterEMA']


@struct.dataclass
class _EMAHyperParams:
  inner: Any
  ema_decay: Any


@struct.dataclass
class _EMAState:
  inner: Any  # the wrapped optimizer's state
  ema: Any  # the average, with the structure of the target


class ParameterEMA(OptimizerWrapper):
  """After each update `p`, `ema = d * ema + (1 - d) * p`, starting at the
  initial target. `optimizer.state.param_states.ema` has the structure of
  `optimizer.target` (e.g. an `nn.Model` for evaluation); it is checkpointed.

  Arguments:
    wrapped_optimizer: the `OptimizerDef` that updates the target.
    ema_decay: `d` above (default 0.999; override per step with
      `apply_gradient(grads, ema_decay=...)`).
  """

  def __init__(self, wrapped_optimizer: OptimizerDef, ema_decay=0.999):
    super().__init__(wrapped_optimizer,
                     _EMAHyperParams(wrapped_optimizer.hyper_params,
                                     ema_decay))

  def init_state(self, params):
    ema = jax.tree_util.tree_map(jnp.array, params)  # a copy
    return initial_state(
        _EMAState(self.wrapped_optimizer.init_state(params), ema))

  def apply_gradient(self, hyper_params, params, state, grads):
    new_params, new_inner = self.wrapped_optimizer.apply_gradient(
        hyper_params.inner, params, state.param_states.inner, grads)
    d = hyper_params.ema_decay
    ema = jax.tree_util.tree_map(
        lambda e, p: (d * e + (1. - d) * p).astype(jnp.result_type(e)),
        state.param_states.ema, new_params)
    return new_params, OptimizerState(state.step + 1,
                                      _EMAState(new_inner, ema))
