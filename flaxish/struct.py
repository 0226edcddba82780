"""Frozen dataclasses that are pytrees and serialize to state dicts.

`@dataclass` turns a class into a frozen `dataclasses.dataclass`, registers it
with `jax.tree_util` (fields are children unless marked
`field(pytree_node=False)`, which makes them static metadata) and registers a
state-dict handler (static fields are not serialized).
"""
import dataclasses
from typing import Any, TypeVar

import jax

from flaxish.serialization.state_dict import (from_state_dict,
                                              register_serialization_state,
                                              to_state_dict)

__all__ = ['dataclass', 'field', 'PyTreeNode']

_T = TypeVar('_T')


def field(pytree_node: bool = True, **kwargs) -> Any:
  """A dataclass field; `pytree_node=False` makes it static (not a child)."""
  metadata = dict(kwargs.pop('metadata', None) or {})
  metadata['pytree_node'] = pytree_node
  return dataclasses.field(metadata=metadata, **kwargs)


def _is_node(f: dataclasses.Field) -> bool:
  return f.metadata.get('pytree_node', True)


def dataclass(clz: _T) -> _T:
  """Makes `clz` a frozen dataclass, a pytree and serializable.

  Adds `replace(**updates)`. Applying it twice is a no-op.
  """
  if '_flaxish_dataclass' in clz.__dict__:
    return clz
  data_clz = dataclasses.dataclass(frozen=True)(clz)
  fields = dataclasses.fields(data_clz)
  data_names = tuple(f.name for f in fields if _is_node(f))
  meta_names = tuple(f.name for f in fields if not _is_node(f))

  def replace(self, **updates):
    """Returns a copy with the given fields replaced."""
    return dataclasses.replace(self, **updates)

  data_clz.replace = replace

  def flatten_with_keys(x):
    children = tuple((jax.tree_util.GetAttrKey(name), getattr(x, name))
                     for name in data_names)
    return children, tuple(getattr(x, name) for name in meta_names)

  def unflatten(meta, children):
    kwargs = dict(zip(meta_names, meta))
    kwargs.update(zip(data_names, children))
    obj = object.__new__(data_clz)
    for name, value in kwargs.items():
      object.__setattr__(obj, name, value)
    return obj

  jax.tree_util.register_pytree_with_keys(
      data_clz, flatten_with_keys, unflatten,
      flatten_func=lambda x: (tuple(getattr(x, n) for n in data_names),
                              tuple(getattr(x, n) for n in meta_names)))

  def to_state(x):
    return {name: to_state_dict(getattr(x, name)) for name in data_names}

  def from_state(x, state):
    state = dict(state)
    updates = {}
    for name in data_names:
      if name not in state:
        raise ValueError(f'missing field "{name}" in the state dict while '
                         f'restoring an instance of {clz.__name__}')
      updates[name] = from_state_dict(getattr(x, name), state.pop(name))
    if state:
      raise ValueError(f'unknown field(s) {sorted(state)} in the state dict '
                       f'while restoring an instance of {clz.__name__}')
    return x.replace(**updates)

  register_serialization_state(data_clz, to_state, from_state, override=True)
  data_clz._flaxish_dataclass = True
  return data_clz


class PyTreeNode:
  """Base class: subclasses are turned into `@dataclass`es automatically."""

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    dataclass(cls)

  def __init__(self, *args, **kwargs):  # overridden by the dataclass
    raise NotImplementedError

  def replace(self: _T, **updates) -> _T:  # overridden by the dataclass
    raise NotImplementedError
