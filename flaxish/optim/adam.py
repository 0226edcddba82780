"""Adam with decoupled (AdamW-style) weight decay."""
from typing import Any

from flaxish import struct
from flaxish.optim import _moments
from flaxish.optim.base import OptimizerDef, cast_like, is_static_zero

__all__ = ['Adam']


@struct.dataclass
class _AdamHyperParams:
  learning_rate: Any
  beta1: Any
  beta2: Any
  eps: Any
  weight_decay: Any


class Adam(OptimizerDef):
  """Adam (https://arxiv.org/abs/1412.6980).

  `m = b1 m + (1-b1) g`, `v = b2 v + (1-b2) g^2`, bias-corrected with
  `t = step + 1`; `p -= lr * m_hat / (sqrt(v_hat) + eps) + lr * wd * p`
  (the decay is decoupled from the gradient, as in AdamW).

  Arguments:
    learning_rate: the step size (required, here or per step).
    beta1: decay of the gradient average (default 0.9).
    beta2: decay of the squared-gradient average (default 0.999).
    eps: added to the denominator after the square root (default 1e-8).
    weight_decay: decoupled weight decay (default 0).
  """

  def __init__(self, learning_rate=None, beta1=0.9, beta2=0.999, eps=1e-8,
               weight_decay=0.0):
    super().__init__(
        _AdamHyperParams(learning_rate, beta1, beta2, eps, weight_decay))

  def init_param_state(self, param):
    return _moments.init_moments(param)

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    lr = hyper_params.learning_rate
    update, new_state = _moments.adam_direction(step, hyper_params, state,
                                                grad)
    new_param = param - lr * update
    if not is_static_zero(hyper_params.weight_decay):
      new_param = new_param - lr * hyper_params.weight_decay * param
    return cast_like(new_param, param), new_state
