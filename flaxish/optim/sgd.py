"""Plain gradient descent: `p -= learning_rate * g`."""
from typing import Any

from flaxish import struct
from flaxish.optim.base import OptimizerDef, cast_like

__all__ = ['GradientDescent']


@struct.dataclass
class _GradientDescentHyperParams:
  learning_rate: Any


class GradientDescent(OptimizerDef):
  """Gradient descent; `learning_rate` is required (here or per step); the
  per-parameter state is `()`."""

  def __init__(self, learning_rate=None):
    super().__init__(_GradientDescentHyperParams(learning_rate))

  def init_param_state(self, param):
    return ()

  def apply_param_gradient(self, step, hyper_params, param, state, grad):
    new_param = param - hyper_params.learning_rate * grad
    return cast_like(new_param, param), state
