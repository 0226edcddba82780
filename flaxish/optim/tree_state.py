"""State dicts of foreign pytrees (optax, example_libraries states), keyed
by `jax.tree_util` key path: `{'0': {'mu': {'w': array}}}`."""
from typing import Any, Dict

import jax

from flaxish import serialization
from flaxish import traverse_util
from flaxish.optim.base import OptimizerDef, OptimizerState
from flaxish.traverse_util import path_str

__all__ = ['tree_to_state_dict', 'tree_from_state_dict',
           'TreeStateOptimizerDef']


def _key_parts(keypath):
  parts = [str(next((getattr(k, a) for a in ('key', 'name', 'idx')
                     if hasattr(k, a)), k)) for k in keypath]
  return '/'.join(parts).split('/') if parts else []


def tree_to_state_dict(tree: Any) -> Dict[str, Any]:
  """Nested dicts of the leaves of `tree`, keyed by their key-path parts."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  if len(leaves) == 1 and not leaves[0][0]:
    return leaves[0][1]  # the tree is a single leaf
  return traverse_util.unflatten_dict(
      {tuple(_key_parts(keypath)): leaf for keypath, leaf in leaves})


def tree_from_state_dict(target: Any, state: Any) -> Any:
  """`target` with its leaves replaced by the values in `state` (ValueError
  naming the first path missing from it)."""
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(target)
  new_leaves = []
  for keypath, _ in leaves_with_path:
    node = state
    for part in _key_parts(keypath):
      if not isinstance(node, dict) or part not in node:
        raise ValueError(f'missing {path_str(keypath)} in the optimizer '
                         'state dict')
      node = node[part]
    new_leaves.append(node)
  return treedef.unflatten(new_leaves)


class TreeStateOptimizerDef(OptimizerDef):
  """An OptimizerDef whose per-parameter state is one foreign pytree (an
  optax or example_libraries state): it serializes by key path."""

  def state_dict(self, target, state):
    return {'target': serialization.to_state_dict(target),
            'state': {'step': state.step,
                      'param_states': tree_to_state_dict(state.param_states)}}

  def restore_state(self, opt_target, opt_state, state_dict):
    sd = state_dict['state']
    return (serialization.from_state_dict(opt_target, state_dict['target']),
            OptimizerState(sd['step'], tree_from_state_dict(
                opt_state.param_states, sd['param_states'])))
