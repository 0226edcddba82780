"""State dicts for arbitrary pytrees (optax / example_libraries states).

`tree_to_state_dict(tree)` turns any pytree into nested dicts keyed by the
`jax.tree_util` key path (`{'0': {'mu': {'w': array}}}`), so namedtuple states
of other libraries serialize without a registry entry;
`tree_from_state_dict(target, state)` puts the values back into `target`'s
structure.
"""
from typing import Any, Dict

import jax

from flaxish import serialization
from flaxish.optim.base import OptimizerDef, OptimizerState, path_str

__all__ = ['tree_to_state_dict', 'tree_from_state_dict',
           'TreeStateOptimizerDef']


def _key_parts(keypath):
  return path_str(keypath)[1:].split('/') if keypath else []


def tree_to_state_dict(tree: Any) -> Dict[str, Any]:
  """Nested dicts of the leaves of `tree`, keyed by their key-path parts."""
  out: Dict[str, Any] = {}
  for keypath, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    parts = _key_parts(keypath)
    if not parts:
      return leaf  # the tree is a single leaf
    node = out
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = leaf
  return out


def tree_from_state_dict(target: Any, state: Any) -> Any:
  """`target` with its leaves replaced by the values in `state`.

  Raises:
    ValueError: naming the first path of `target` missing from `state`.
  """
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
    target = serialization.from_state_dict(opt_target, state_dict['target'])
    sd = state_dict['state']
    state = OptimizerState(
        sd['step'], tree_from_state_dict(opt_state.param_states,
                                         sd['param_states']))
    return target, state
