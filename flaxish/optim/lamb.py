"""LAMB: Adam updates rescaled per layer by a trust ratio."""
from typing import Any, NamedTuple

import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import (OptimizerDef, _is_static_zero, cast_like,
                                param_state)

__all__ = ['LAMB']


@struct.dataclass
class _LAMBHyperParams:
  learning_rate: Any
  beta1: Any
  beta2: Any
  weight_decay: Any
  eps: Any


@param_state
class _LAMBParamState(NamedTuple):
  grad_ema: Any
  grad_sq_ema: Any


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
    return _LAMBParamState(jnp.zeros_like(param), jnp.zeros_like(param))

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    beta1, beta2 = hyper_params.beta1, hyper_params.beta2
    grad_ema = beta1 * state.grad_ema + (1. - beta1) * grad
    grad_sq_ema = beta2 * state.grad_sq_ema + (1. - beta2) * jnp.square(grad)
    t = step + 1
    grad_ema_corr = grad_ema / (1. - beta1**t)
    grad_sq_ema_corr = grad_sq_ema / (1. - beta2**t)
    update = grad_ema_corr / (jnp.sqrt(grad_sq_ema_corr) + hyper_params.eps)
    if not _is_static_zero(hyper_params.weight_decay):
      update = update + hyper_params.weight_decay * param
    param_norm = jnp.linalg.norm(param)
    update_norm = jnp.linalg.norm(update)
    trust_ratio = jnp.where(update_norm > 0.,
                            param_norm / jnp.where(update_norm > 0.,
                                                   update_norm, 1.), 1.)
    new_param = param - trust_ratio * hyper_params.learning_rate * update
    new_state = _LAMBParamState(cast_like(grad_ema, state.grad_ema),
                                cast_like(grad_sq_ema, state.grad_sq_ema))
    return cast_like(new_param, param), new_state
