"""Runs a `jax.example_libraries.optimizers` triple as an `OptimizerDef`."""
from typing import Any, Sequence

from flaxish import struct
from flaxish.optim.base import OptimizerState, check_gradients, initial_state
from flaxish.optim.tree_state import TreeStateOptimizerDef

__all__ = ['ExampleLibrariesOptimizer']


@struct.dataclass
class _NoHyperParams:
  pass


class ExampleLibrariesOptimizer(TreeStateOptimizerDef):
  """Wraps the `(init_fun, update_fun, get_params)` triple of a
  `jax.example_libraries.optimizers` rule, e.g. `optimizers.adam(1e-3)`.

  The step size (or schedule) is fixed in the triple: no overrides. The state
  is `OptimizerState(step, packed_state)`; `update_fun` gets `step`.
  """

  def __init__(self, triple: Sequence[Any]):
    if (not isinstance(triple, (tuple, list)) or len(triple) != 3 or
        not all(callable(f) for f in triple)):
      raise TypeError('ExampleLibrariesOptimizer needs an (init_fun, '
                      'update_fun, get_params) triple such as '
                      f'jax.example_libraries.optimizers.adam(1e-3), got '
                      f'{triple!r}')
    super().__init__(_NoHyperParams())
    self.init_fun, self.update_fun, self.get_params = triple

  def update_hyper_params(self, **hyper_param_overrides):
    hp = hyper_param_overrides.pop('hyper_params', self.hyper_params)
    if hyper_param_overrides:
      raise TypeError(
          f'cannot override {sorted(hyper_param_overrides)}: an '
          'example_libraries optimizer fixes its step size when it is built; '
          'pass a schedule instead, e.g. optimizers.adam(lambda i: lr(i))')
    return hp

  def init_state(self, params):
    return initial_state(self.init_fun(params))

  def apply_gradient(self, hyper_params, params, state, grads):
    check_gradients(params, grads)
    new_opt_state = self.update_fun(state.step, grads, state.param_states)
    return (self.get_params(new_opt_state),
            OptimizerState(state.step + 1, new_opt_state))
