"""The bias-corrected gradient moments that Adam and LAMB share."""
from typing import Any, NamedTuple, Tuple

import jax.numpy as jnp

from flaxish.optim.base import cast_like, param_state


@param_state
class MomentState(NamedTuple):
  """Per-parameter state: `grad_ema` (m) and `grad_sq_ema` (v)."""
  grad_ema: Any
  grad_sq_ema: Any


def init_moments(param: Any) -> MomentState:
  """Zero moments of the shape and dtype of `param`."""
  return MomentState(jnp.zeros_like(param), jnp.zeros_like(param))


def adam_direction(step: Any, hyper_params: Any, state: MomentState,
                   grad: Any) -> Tuple[Any, MomentState]:
  """`(m_hat / (sqrt(v_hat) + eps), new_state)` as in `Adam`; `hyper_params`
  has `beta1`, `beta2` and `eps`."""
  beta1, beta2 = hyper_params.beta1, hyper_params.beta2
  grad_ema = beta1 * state.grad_ema + (1. - beta1) * grad
  grad_sq_ema = beta2 * state.grad_sq_ema + (1. - beta2) * jnp.square(grad)
  t = step + 1
  grad_ema_corr = grad_ema / (1. - beta1**t)
  grad_sq_ema_corr = grad_sq_ema / (1. - beta2**t)
  direction = grad_ema_corr / (jnp.sqrt(grad_sq_ema_corr) + hyper_params.eps)
  return direction, MomentState(cast_like(grad_ema, state.grad_ema),
                                cast_like(grad_sq_ema, state.grad_sq_ema))
