"""Base class for optimizer defs that wrap another def."""
import dataclasses
from typing import Any, Tuple

from flaxish.optim.base import OptimizerDef

__all__ = ['OptimizerWrapper']


class OptimizerWrapper(OptimizerDef):
  """Delegates the update rule to `wrapped_optimizer`; overrides such as
  `learning_rate=` pass through to it.

  Arguments:
    wrapped_optimizer: the `OptimizerDef` being wrapped.
    hyper_params: a dataclass with an `inner` field holding
      `wrapped_optimizer.hyper_params`, plus the wrapper's own fields.
  """

  def __init__(self, wrapped_optimizer: OptimizerDef, hyper_params: Any):
    if not isinstance(wrapped_optimizer, OptimizerDef):
      raise TypeError(f'{type(self).__name__} wraps an OptimizerDef (such as '
                      f'optim.Adam(1e-3)), got {wrapped_optimizer!r}')
    self.wrapped_optimizer = wrapped_optimizer
    super().__init__(hyper_params)

  def _own_names(self, hp) -> Tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(hp) if f.name != 'inner')

  def hyper_param_names(self, hyper_params=None):
    hp = self.hyper_params if hyper_params is None else hyper_params
    own = self._own_names(hp)
    inner = self.wrapped_optimizer.hyper_param_names(hp.inner)
    return own + tuple(n for n in inner if n not in own)

  def update_hyper_params(self, **hyper_param_overrides):
    hp = hyper_param_overrides.pop('hyper_params', self.hyper_params)
    if not hyper_param_overrides:
      return hp
    self.check_override_names(hyper_param_overrides, hp)
    own_names = self._own_names(hp)
    own = {k: v for k, v in hyper_param_overrides.items() if k in own_names}
    rest = {k: v for k, v in hyper_param_overrides.items()
            if k not in own_names}
    inner = hp.inner
    if rest:
      inner = self.wrapped_optimizer.update_hyper_params(hyper_params=inner,
                                                         **rest)
    return hp.replace(inner=inner, **own)

  def check_hyper_params(self, hyper_params):
    self.wrapped_optimizer.check_hyper_params(hyper_params.inner)
