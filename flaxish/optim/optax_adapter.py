"""Runs an optax `GradientTransformation` behind the `OptimizerDef` API
(calling only `tx.init` / `tx.update`: flaxish does not depend on optax)."""
from typing import Any, Dict

import jax
import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import OptimizerState, check_gradients, initial_state
from flaxish.optim.tree_state import TreeStateOptimizerDef

__all__ = ['OptaxOptimizer']


@struct.dataclass
class _OptaxHyperParams:
  overrides: Dict[str, Any]


class OptaxOptimizer(TreeStateOptimizerDef):
  """`p = p + updates` (in the parameter dtype); the state is
  `OptimizerState(step, opt_state)`, saved by key path. Per-step overrides
  such as `learning_rate=lr` need `optax.inject_hyperparams`::

    tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
    optimizer = optim.OptaxOptimizer(tx).create(params)
    optimizer = optimizer.apply_gradient(grads, learning_rate=lr)

  Arguments:
    transformation: an object with `init(params)` and
      `update(grads, state, params)` (an `optax.GradientTransformation`).
  """

  def __init__(self, transformation: Any):
    if not (callable(getattr(transformation, 'init', None)) and
            callable(getattr(transformation, 'update', None))):
      raise TypeError('OptaxOptimizer needs an optax GradientTransformation '
                      f'(with init and update), got {transformation!r}')
    super().__init__(_OptaxHyperParams({}))
    self.transformation = transformation

  def hyper_param_names(self, hyper_params=None):
    return ('*',)  # checked against the optax state in apply_gradient

  def update_hyper_params(self, **hyper_param_overrides):
    hp = hyper_param_overrides.pop('hyper_params', self.hyper_params)
    if hyper_param_overrides:
      hp = hp.replace(overrides={**hp.overrides, **hyper_param_overrides})
    return hp

  def init_state(self, params):
    return initial_state(self.transformation.init(params))

  def _inject(self, opt_state, overrides):
    hps = getattr(opt_state, 'hyperparams', None)  # inject_hyperparams
    hps = hps if isinstance(hps, dict) else None
    unknown = sorted(set(overrides) - set(hps or {}))
    if unknown:
      if hps is None:
        raise TypeError(
            f'cannot override {unknown}: this optax transformation has no '
            'injectable hyper-parameters; build it with '
            'optax.inject_hyperparams(optax.adam)(learning_rate=...) to '
            'change them per step')
      raise TypeError(f'cannot override {unknown}: the optax transformation '
                      f'has the hyper-parameters {sorted(hps)}')
    new_hps = dict(hps)
    for name, value in overrides.items():
      new_hps[name] = jnp.asarray(value, jnp.result_type(hps[name]))
    return opt_state._replace(hyperparams=new_hps)

  def apply_gradient(self, hyper_params, params, state, grads):
    check_gradients(params, grads)
    opt_state = state.param_states
    if hyper_params.overrides:
      opt_state = self._inject(opt_state, hyper_params.overrides)
    updates, new_opt_state = self.transformation.update(grads, opt_state,
                                                        params)
    new_params = jax.tree_util.tree_map(
        lambda p, u: jnp.asarray(p + u).astype(jnp.result_type(p)), params,
        updates)
    return new_params, OptimizerState(state.step + 1, new_opt_state)
