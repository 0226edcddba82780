"""SGD with (Nesterov) momentum and coupled (L2) weight decay."""
from typing import Any, NamedTuple

import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import (OptimizerDef, cast_like, is_static_zero,
                                param_state)

__all__ = ['Momentum']


@struct.dataclass
class _MomentumHyperParams:
  learning_rate: Any
  beta: Any
  weight_decay: Any
  nesterov: bool


@param_state
class _MomentumParamState(NamedTuple):
  momentum: Any


class Momentum(OptimizerDef):
  """Momentum: `g += wd * p; m = beta * m + g; p -= lr * m` (with
  `nesterov=True` the step is `g + beta * m`, `m` updated first).

  Arguments:
    learning_rate: the step size (required, here or per step).
    beta: the momentum coefficient (default 0.9).
    weight_decay: L2 coefficient added to the gradient (default 0).
    nesterov: use Nesterov momentum (default False).
  """

  def __init__(self, learning_rate=None, beta=0.9, weight_decay=0,
               nesterov=False):
    super().__init__(
        _MomentumHyperParams(learning_rate, beta, weight_decay, nesterov))

  def init_param_state(self, param):
    return _MomentumParamState(jnp.zeros_like(param))

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    beta = hyper_params.beta
    if not is_static_zero(hyper_params.weight_decay):
      grad = grad + hyper_params.weight_decay * param
    new_momentum = beta * state.momentum + grad
    d_p = grad + beta * new_momentum if hyper_params.nesterov else new_momentum
    new_param = param - hyper_params.learning_rate * d_p
    return (cast_like(new_param, param),
            _MomentumParamState(cast_like(new_momentum, state.momentum)))
