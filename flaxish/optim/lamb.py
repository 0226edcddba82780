"""LAMB: Adam updates rescaled per layer by a trust ratio."""
from typing import Any

import jax.numpy as jnp

from flaxish import struct
from flaxish.optim import _moments
from flaxish.optim.base import OptimizerDef, cast_like, is_static_zero

__all__ = ['LAMB']


@struct.dataclass
class _LAMBHyperParams:
  learning_rate: Any
  beta1: Any
  beta2: Any
  weight_decay: Any
  eps: Any


class LAMB(OptimizerDef):
  """LAMB (https://arxiv.org/abs/1904.00962).

  `u = m_hat / (sqrt(v_hat) + eps) + wd * p` (bias-corrected Adam moments),
  then `p -= lr * (|p| / |u|) * u` with norms over the whole parameter. The
  trust ratio is 1 when `|u| == 0`, so a parameter that is all zeros (a
  fresh bias) does not move, as in the 2020 rule.

  Arguments:
    learning_rate: the step size (required, here or per step).
    beta1: decay of the gradient average (default 0.9).
    beta2: decay of the squared-gradient average (default 0.999).
    weight_decay: coefficient of `p` added to the update (default 0).
    eps: added to the denominator after the square root (default 1e-6).
  """

  def __init__(self, learning_rate=None, beta1=0.9, beta2=0.999,
               weight_decay=0, eps=1e-6):
    super().__init__(
        _LAMBHyperParams(learning_rate, beta1, beta2, weight_decay, eps))

  def init_param_state(self, param):
    return _moments.init_moments(param)

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    update, new_state = _moments.adam_direction(step, hyper_params, state,
                                                grad)
    if not is_static_zero(hyper_params.weight_decay):
      update = update + hyper_params.weight_decay * param
    param_norm = jnp.linalg.norm(param)
    update_norm = jnp.linalg.norm(update)
    trust_ratio = jnp.where(update_norm > 0.,
                            param_norm / jnp.where(update_norm > 0.,
                                                   update_norm, 1.), 1.)
    new_param = param - trust_ratio * hyper_params.learning_rate * update
    return cast_like(new_param, param), new_state
