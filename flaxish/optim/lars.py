"""LARS: momentum SGD with a layer-wise scaled learning rate."""
from typing import Any, NamedTuple

import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import (OptimizerDef, cast_like, is_static_zero,
                                param_state)

__all__ = ['LARS']


@struct.dataclass
class _LARSHyperParams:
  learning_rate: Any
  beta: Any
  weight_decay: Any
  trust_coefficient: Any
  eps: Any
  nesterov: bool


@param_state
class _LARSParamState(NamedTuple):
  momentum: Any


class LARS(OptimizerDef):
  """LARS (https://arxiv.org/abs/1708.03888): the learning rate of each
  parameter is scaled by `tc * |p| / (|g| + wd * |p| + eps)` (1 if `|p|` or
  `|g|` is 0); then `g += wd * p`, `m = beta * m + scaled_lr * g` and
  `p -= m` (Nesterov: `p -= scaled_lr * g + beta * m`).

  Arguments:
    learning_rate: the step size (required, here or per step).
    beta: the momentum coefficient (default 0.9).
    weight_decay: L2 coefficient (default 0).
    trust_coefficient: `tc` above (default 0.001).
    eps: added to the trust-ratio denominator (default 0).
    nesterov: use Nesterov momentum (default False).
  """

  def __init__(self, learning_rate=None, beta=0.9, weight_decay=0,
               trust_coefficient=0.001, eps=0, nesterov=False):
    super().__init__(_LARSHyperParams(learning_rate, beta, weight_decay,
                                      trust_coefficient, eps, nesterov))

  def init_param_state(self, param):
    return _LARSParamState(jnp.zeros_like(param))

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    wd = hyper_params.weight_decay
    param_norm = jnp.linalg.norm(param)
    grad_norm = jnp.linalg.norm(grad)
    denom = grad_norm + wd * param_norm + hyper_params.eps
    use_one = jnp.logical_or(grad_norm == 0., param_norm == 0.)
    trust_ratio = jnp.where(
        use_one, 1.,
        hyper_params.trust_coefficient * param_norm /
        jnp.where(use_one, 1., denom))
    scaled_lr = hyper_params.learning_rate * trust_ratio
    if not is_static_zero(wd):
      grad = grad + wd * param
    scaled_grad = scaled_lr * grad
    new_momentum = hyper_params.beta * state.momentum + scaled_grad
    new_param = param - (scaled_grad + hyper_params.beta * new_momentum
                         if hyper_params.nesterov else new_momentum)
    return (cast_like(new_param, param),
            _LARSParamState(cast_like(new_momentum, state.momentum)))
