"""RMSProp: steps scaled by a moving average of squared gradients."""
from typing import Any, NamedTuple

import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import OptimizerDef, cast_like, param_state

__all__ = ['RMSProp']


@struct.dataclass
class _RMSPropHyperParams:
  learning_rate: Any
  beta2: Any
  eps: Any


@param_state
class _RMSPropParamState(NamedTuple):
  v: Any


class RMSProp(OptimizerDef):
  """RMSProp: `v = b2 v + (1-b2) g^2; p -= lr * g / (sqrt(v) + eps)`.

  Arguments:
    learning_rate: the step size (required, here or per step).
    beta2: decay of the squared-gradient average (default 0.9).
    eps: added to the denominator after the square root (default 1e-8).
  """

  def __init__(self, learning_rate=None, beta2=0.9, eps=1e-8):
    super().__init__(_RMSPropHyperParams(learning_rate, beta2, eps))

  def init_param_state(self, param):
    return _RMSPropParamState(jnp.zeros_like(param))

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    beta2 = hyper_params.beta2
    new_v = beta2 * state.v + (1. - beta2) * jnp.square(grad)
    new_param = param - hyper_params.learning_rate * grad / (
        jnp.sqrt(new_v) + hyper_params.eps)
    return (cast_like(new_param, param),
            _RMSPropParamState(cast_like(new_v, state.v)))
