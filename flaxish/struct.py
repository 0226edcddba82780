"""Frozen dataclasses that are pytrees and serialize to state dicts.

    @struct.dataclass
    class TrainState:
      step: int
      params: Any
      apply_fn: Callable = struct.field(pytree_node=False)

Fields are pytree children (`GetAttrKey` paths) unless marked
`field(pytree_node=False)` (static: part of the tree structure). The state
dict is `{name: state dict of the value}` over the children; static fields
are kept from the target on restore.
"""
import dataclasses
import inspect
from typing import Any, TypeVar

import jax

from flaxish.serialization.state_dict import (from_state_dict,
                                              register_serialization_state,
                                              to_state_dict)

__all__ = ['dataclass', 'field', 'PyTreeNode']

_T = TypeVar('_T')


def field(pytree_node: bool = True, **kwargs) -> Any:
  """A dataclass field; `pytree_node=False` makes it static (not a child).
  Other keyword arguments (`default`, ...) go to `dataclasses.field`."""
  metadata = dict(kwargs.pop('metadata', None) or {})
  metadata['pytree_node'] = pytree_node
  return dataclasses.field(metadata=metadata, **kwargs)


def _is_node(f: dataclasses.Field) -> bool:
  return f.metadata.get('pytree_node', True)


def _build(clz: type, values: dict) -> Any:
  """An instance with the given field values, without running `__init__`."""
  obj = object.__new__(clz)
  for name, value in values.items():
    object.__setattr__(obj, name, value)
  return obj


def _init_only_stores(data_clz: type, own_init: bool) -> bool:
  """Whether `__init__` only stores exactly the fields (no custom
  `__init__`, `__post_init__`, `init=False` field or `InitVar`)."""
  if own_init or hasattr(data_clz, '__post_init__'):
    return False
  params = list(inspect.signature(data_clz.__init__).parameters)[1:]
  return params == [f.name for f in dataclasses.fields(data_clz)]


def _register_with_callbacks(data_clz: type, data_names, meta_names):
  """Registers a pytree whose rebuilding skips `__init__`."""

  def flatten_with_keys(x):
    children = tuple((jax.tree_util.GetAttrKey(name), getattr(x, name))
                     for name in data_names)
    return children, tuple(getattr(x, name) for name in meta_names)

  def flatten(x):
    return (tuple(getattr(x, name) for name in data_names),
            tuple(getattr(x, name) for name in meta_names))

  def unflatten(meta, children):
    return _build(data_clz, dict(zip(meta_names + data_names,
                                     (*meta, *children))))

  jax.tree_util.register_pytree_with_keys(
      data_clz, flatten_with_keys, unflatten, flatten_func=flatten)


def dataclass(clz: _T) -> _T:
  """Makes `clz` a frozen dataclass, a pytree and serializable, with
  `replace(**updates)`; applying it twice is a no-op."""
  if '_flaxish_dataclass' in clz.__dict__:
    return clz
  own_init = '__init__' in clz.__dict__
  data_clz = dataclasses.dataclass(frozen=True)(clz)
  fields = dataclasses.fields(data_clz)
  data_names = tuple(f.name for f in fields if _is_node(f))
  meta_names = tuple(f.name for f in fields if not _is_node(f))

  def replace(self, **updates):
    """A copy with the given fields replaced (runs `__init__`)."""
    return dataclasses.replace(self, **updates)

  data_clz.replace = replace

  if _init_only_stores(data_clz, own_init):
    # Flattened in C++ (cheaper jit dispatch); rebuilt by calling `__init__`.
    jax.tree_util.register_dataclass(data_clz, data_fields=list(data_names),
                                     meta_fields=list(meta_names))
  else:
    _register_with_callbacks(data_clz, data_names, meta_names)

  def to_state(x):
    return {name: to_state_dict(getattr(x, name)) for name in data_names}

  def from_state(x, state):
    missing = [name for name in data_names if name not in state]
    unknown = sorted(set(state) - set(data_names))
    if missing or unknown:
      raise ValueError(
          f'cannot restore a {data_clz.__name__}: the state dict lacks the '
          f'field(s) {missing} and has the unknown field(s) {unknown}')
    values = {name: getattr(x, name) for name in meta_names}
    values.update((name, from_state_dict(getattr(x, name), state[name]))
                  for name in data_names)
    return _build(data_clz, values)

  register_serialization_state(data_clz, to_state, from_state, override=True)
  data_clz._flaxish_dataclass = True  # pylint: disable=protected-access
  return data_clz


class PyTreeNode:
  """Base class: subclasses are turned into `@dataclass`es automatically.

      class Params(struct.PyTreeNode):
        w: Any
        scale: float = struct.field(pytree_node=False, default=1.0)
  """

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    dataclass(cls)

  def __init__(self, *args, **kwargs):  # replaced by the dataclass
    raise NotImplementedError

  def replace(self: _T, **updates) -> _T:  # replaced by the dataclass
    raise NotImplementedError
