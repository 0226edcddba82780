"""Adagrad: per-coordinate step sizes from the sum of squared gradients."""
from typing import Any, NamedTuple

import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import OptimizerDef, cast_like, param_state

__all__ = ['Adagrad']


@struct.dataclass
class _AdagradHyperParams:
  learning_rate: Any
  eps: Any


@param_state
class _AdagradParamState(NamedTuple):
  G: Any  # pylint: disable=invalid-name


class Adagrad(OptimizerDef):
  """Adagrad: `G += g^2; p -= lr * g / (sqrt(G) + eps)`.

  Arguments:
    learning_rate: the step size (required, here or per step).
    eps: added to the denominator after the square root (default 1e-8).
  """

  def __init__(self, learning_rate=None, eps=1e-8):
    super().__init__(_AdagradHyperParams(learning_rate, eps))

  def init_param_state(self, param):
    return _AdagradParamState(jnp.zeros_like(param))

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    new_G = state.G + jnp.square(grad)  # pylint: disable=invalid-name
    new_param = param - hyper_params.learning_rate * grad / (
        jnp.sqrt(new_G) + hyper_params.eps)
    return (cast_like(new_param, param),
            _AdagradParamState(cast_like(new_G, state.G)))
