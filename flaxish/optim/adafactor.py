"""Adafactor: Adam-like steps with a factored second-moment estimate."""
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from flaxish import struct
from flaxish.optim.base import OptimizerDef, cast_like, param_state

__all__ = ['Adafactor']


@struct.dataclass
class _AdafactorHyperParams:
  learning_rate: Any
  factored: bool
  multiply_by_parameter_scale: bool
  beta1: Any
  decay_rate: Any
  clipping_threshold: Any
  weight_decay_rate: Any
  min_dim_size_to_factor: int
  epsilon1: Any
  epsilon2: Any
  step_offset: Any = 0


@param_state
class _AdafactorParamState(NamedTuple):
  v_row: Any  # factored second moment: mean over the largest axis
  v_col: Any  # factored second moment: mean over the second-largest axis
  v: Any  # unfactored second moment
  m: Any  # first moment (only with beta1)


class Adafactor(OptimizerDef):
  """Adafactor (https://arxiv.org/abs/1804.04235).

  Per step (t = step - step_offset + 1): `decay = 1 - t^-decay_rate`;
  `v = decay v + (1 - decay) (g^2 + epsilon1)`, factored over the two largest
  axes when both are >= `min_dim_size_to_factor`; `y = g / sqrt(v)`, divided
  by `max(1, rms(y) / clipping_threshold)`; the step is
  `lr * max(rms(p), epsilon2) * y` (the `rms(p)` factor only with
  `multiply_by_parameter_scale`), averaged with `beta1` if given;
  `p = (1 - weight_decay_rate) p - step`. Unused state slots are
  `zeros((1,))`.

  Arguments:
    learning_rate: the step size (required, here or per step).
    factored: factor the second moment of matrices (default True).
    multiply_by_parameter_scale: scale steps by `rms(p)` (default True).
    beta1: momentum coefficient, or None for no momentum (default).
    decay_rate: exponent of the second-moment decay schedule (default 0.8).
    clipping_threshold: update clipping threshold, None for none (default 1).
    weight_decay_rate: decay of `p` per step, None for none (default).
    min_dim_size_to_factor: smallest axis size that is factored (128).
    epsilon1: added to `g^2` (default 1e-30).
    epsilon2: lower bound of `rms(p)` (default 1e-3).
    step_offset: subtracted from the step in the decay schedule (default 0;
      for fine-tuning from a checkpoint).
  """

  def __init__(self, learning_rate: Optional[float] = None,
               factored: bool = True,
               multiply_by_parameter_scale: bool = True,
               beta1: Optional[float] = None, decay_rate: float = 0.8,
               clipping_threshold: Optional[float] = 1.0,
               weight_decay_rate: Optional[float] = None,
               min_dim_size_to_factor: int = 128, epsilon1: float = 1e-30,
               epsilon2: float = 1e-3, step_offset: int = 0):
    super().__init__(_AdafactorHyperParams(
        learning_rate, factored, multiply_by_parameter_scale, beta1,
        decay_rate, clipping_threshold, weight_decay_rate,
        min_dim_size_to_factor, epsilon1, epsilon2, step_offset))

  def _factored_dims(self, shape: Sequence[int]
                     ) -> Optional[Tuple[int, int]]:
    """`(second largest axis, largest axis)` if factored, else None (from
    `self.hyper_params`: they fix the state shapes)."""
    hp = self.hyper_params
    if not hp.factored or len(shape) < 2:
      return None
    order = np.argsort(shape, kind='stable')
    if shape[order[-2]] < hp.min_dim_size_to_factor:
      return None
    return int(order[-2]), int(order[-1])

  def init_param_state(self, param):
    shape = param.shape
    state = {k: jnp.zeros((1,)) for k in ('v_row', 'v_col', 'v', 'm')}
    dims = self._factored_dims(shape)
    if dims is not None:
      d1, d0 = dims
      state['v_row'] = jnp.zeros(np.delete(shape, d0), jnp.float32)
      state['v_col'] = jnp.zeros(np.delete(shape, d1), jnp.float32)
    else:
      state['v'] = jnp.zeros(shape, jnp.float32)
    if self.hyper_params.beta1 is not None:
      state['m'] = jnp.zeros(shape, jnp.float32)
    return _AdafactorParamState(**state)

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    hp = hyper_params
    grad = grad.astype(jnp.float32)
    new_state = {k: jnp.zeros((1,)) for k in ('v_row', 'v_col', 'v', 'm')}
    t = jnp.asarray(step - hp.step_offset, jnp.float32) + 1.
    decay = 1. - t**(-hp.decay_rate)
    mixing = 1. - decay
    scale = hp.learning_rate
    if hp.multiply_by_parameter_scale:
      scale = scale * jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(param))),
                                  hp.epsilon2)
    grad_sq = jnp.square(grad) + hp.epsilon1
    dims = self._factored_dims(param.shape)
    if dims is not None:
      d1, d0 = dims
      v_row = decay * state.v_row + mixing * jnp.mean(grad_sq, axis=d0)
      v_col = decay * state.v_col + mixing * jnp.mean(grad_sq, axis=d1)
      new_state['v_row'], new_state['v_col'] = v_row, v_col
      row_axis = d1 - 1 if d1 > d0 else d1
      row_factor = (v_row / jnp.mean(v_row, axis=row_axis, keepdims=True)
                    )**-0.5
      col_factor = v_col**-0.5
      y = (grad * jnp.expand_dims(row_factor, d0) *
           jnp.expand_dims(col_factor, d1))
    else:
      v = decay * state.v + mixing * grad_sq
      new_state['v'] = v
      y = grad * v**-0.5
    if hp.clipping_threshold is not None:
      y = y / jnp.maximum(
          1., jnp.sqrt(jnp.mean(jnp.square(y))) / hp.clipping_threshold)
    subtrahend = scale * y
    if hp.beta1 is not None:
      m = hp.beta1 * state.m + (1. - hp.beta1) * subtrahend
      new_state['m'] = m
      subtrahend = m
    if hp.weight_decay_rate is not None:
      new_param = (1. - hp.weight_decay_rate) * param - subtrahend
    else:
      new_param = param - subtrahend
    return cast_like(new_param, param), _AdafactorParamState(**new_state)
