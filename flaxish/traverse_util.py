"""Nested-dict flattening and `Traversal` lenses over pytrees.

A `Traversal` selects parts of a value and reads (`iterate`), transforms
(`update`) or replaces (`set`) them, returning new objects. Traversals
compose: `t['key']`, `t.attr`, `t.each()`, `t.tree()`, `t.filter(fn)`,
`t.compose(other)` and `t.merge(*others)`::

  rows = [{'w': 1, 'b': 2}, {'w': 3, 'b': 4}]
  t_identity.each().merge(t_identity['w'], t_identity['b']).update(
      lambda x: -x, rows)    # [{'w': -1, 'b': -2}, {'w': -3, 'b': -4}]
"""
import abc
import copy
import dataclasses
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

import jax

__all__ = [
    'flatten_dict', 'unflatten_dict', 'empty_node', 'Traversal',
    'TraverseId', 't_identity', 'TraverseMerge', 'TraverseCompose',
    'TraverseFilter', 'TraverseAttr', 'TraverseItem', 'TraverseEach',
    'TraverseTree', 'path_str'
]


class _EmptyNode:
  """Marks an empty sub-dict in `flatten_dict(..., keep_empty_nodes=True)`."""

  def __repr__(self):
    return 'empty_node'


empty_node = _EmptyNode()


def path_str(keys: Iterable[Any]) -> str:
  """A tree path as messages show it: `'/Dense_0/kernel'`, the root `'/'`;
  `keys` are dict keys, indices or `jax.tree_util` key-path entries (a key
  that is empty or contains '/' is quoted)."""
  def part(k):
    k = str(next((getattr(k, attr) for attr in ('key', 'name', 'idx')
                  if hasattr(k, attr)), k))
    return repr(k) if not k or '/' in k else k
  return '/' + '/'.join(part(k) for k in keys)


def flatten_dict(xs: Dict, keep_empty_nodes: bool = False,
                 is_leaf: Optional[Callable[[Tuple, Any], bool]] = None,
                 sep: Optional[str] = None) -> Dict:
  """Flattens a nested dict into `{path: leaf}`, in the order of `xs`.

  Arguments:
    xs: a nested dict (anything that is not a dict is a leaf).
    keep_empty_nodes: keep empty sub-dicts as `empty_node` leaves (default:
      drop them, as in 2020).
    is_leaf: optional `fn(path, value) -> bool` that stops the recursion.
    sep: if given, keys are `sep.join(path)` strings (e.g. `'a/b'`) instead of
      tuples.
  """
  if not isinstance(xs, dict):
    raise TypeError(f'flatten_dict expects a dict, got {type(xs).__name__}')
  out = {}

  def key(path):
    return path if sep is None else sep.join(str(k) for k in path)

  def visit(node, path):
    for k, v in node.items():
      p = path + (k,)
      if isinstance(v, dict) and not (is_leaf and is_leaf(p, v)):
        if v:
          visit(v, p)
        elif keep_empty_nodes:
          out[key(p)] = empty_node
      else:
        out[key(p)] = v

  visit(xs, ())
  return out


def unflatten_dict(xs: Dict, sep: Optional[str] = None) -> Dict:
  """Inverse of `flatten_dict`: a nested dict from `{path: leaf}` (tuple
  keys, or strings split at `sep`); `empty_node` leaves become empty dicts."""
  out = {}
  for path, value in xs.items():
    if sep is not None:
      path = tuple(path.split(sep))
    if not isinstance(path, tuple):
      raise TypeError(f'unflatten_dict expects tuple keys, got {path!r}; '
                      'pass sep= for string keys')
    node = out
    for k in path[:-1]:
      child = node.setdefault(k, {})
      if not isinstance(child, dict):
        raise ValueError(f'path {path!r} goes through the leaf at {k!r}')
      node = child
    node[path[-1]] = {} if value is empty_node else value
  return out


class Traversal(abc.ABC):
  """Selects parts of a value (see the module docstring)."""

  @abc.abstractmethod
  def update(self, fn: Callable[[Any], Any], inputs: Any) -> Any:
    """Returns a copy of `inputs` with each selected part `x` set to `fn(x)`."""

  @abc.abstractmethod
  def iterate(self, inputs: Any) -> Iterator[Any]:
    """Yields the selected parts of `inputs`, in order."""

  def set(self, values: Iterable[Any], inputs: Any) -> Any:
    """A copy of `inputs` with the selected parts replaced by `values`."""
    values = list(values)
    count = 0

    def take(_):
      nonlocal count
      if count >= len(values):
        raise ValueError(
            f'Traversal.set: got {len(values)} values but the traversal '
            'selects more parts; pass one value per selected part')
      count += 1
      return values[count - 1]

    result = self.update(take, inputs)
    if count != len(values):
      raise ValueError(
          f'Traversal.set: got {len(values)} values but the traversal '
          f'selects {count} parts; pass one value per selected part')
    return result

  def compose(self, other: 'Traversal') -> 'Traversal':
    """Applies `other` to every part this traversal selects."""
    return TraverseCompose(self, other)

  def merge(self, *traversals: 'Traversal') -> 'Traversal':
    """Applies each of `traversals` in turn to every part this one selects."""
    return self.compose(TraverseMerge(*traversals))

  def each(self) -> 'Traversal':
    """Selects each element (list/tuple) or value (dict) of the parts."""
    return self.compose(TraverseEach())

  def tree(self) -> 'Traversal':
    """Selects each pytree leaf of the parts."""
    return self.compose(TraverseTree())

  def filter(self, fn: Callable[[Any], bool]) -> 'Traversal':
    """Keeps only the parts for which `fn(part)` is true."""
    return self.compose(TraverseFilter(fn))

  def __getattr__(self, attr: str) -> 'Traversal':
    if attr.startswith('__'):
      raise AttributeError(attr)
    return self.compose(TraverseAttr(attr))

  def __getitem__(self, key: Any) -> 'Traversal':
    return self.compose(TraverseItem(key))


class TraverseId(Traversal):
  """Selects the whole input."""

  def update(self, fn, inputs):
    return fn(inputs)

  def iterate(self, inputs):
    yield inputs


t_identity = TraverseId()


class TraverseMerge(Traversal):
  """Selects the parts of each traversal in turn."""

  def __init__(self, *traversals: Traversal):
    self._traversals = traversals

  def update(self, fn, inputs):
    for t in self._traversals:
      inputs = t.update(fn, inputs)
    return inputs

  def iterate(self, inputs):
    for t in self._traversals:
      yield from t.iterate(inputs)


class TraverseCompose(Traversal):
  """Applies traversal `y` to every part selected by traversal `x`."""

  def __init__(self, x: Traversal, y: Traversal):
    self._x, self._y = x, y

  def update(self, fn, inputs):
    return self._x.update(lambda part: self._y.update(fn, part), inputs)

  def iterate(self, inputs):
    for part in self._x.iterate(inputs):
      yield from self._y.iterate(part)


class TraverseFilter(Traversal):
  """Selects the input only if `fn(input)` is true."""

  def __init__(self, fn: Callable[[Any], bool]):
    self._fn = fn

  def update(self, fn, inputs):
    return fn(inputs) if self._fn(inputs) else inputs

  def iterate(self, inputs):
    if self._fn(inputs):
      yield inputs


def _copy_dict(x):
  return dict(x) if type(x) is dict else copy.copy(x)


def _is_namedtuple(x) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), '_fields')


def _rebuild(like, items):
  """A list/tuple/namedtuple of the type of `like` holding `items`."""
  return type(like)(*items) if _is_namedtuple(like) else type(like)(items)


def _replace_attr(inputs, attr, value):
  if _is_namedtuple(inputs):
    return inputs._replace(**{attr: value})
  if dataclasses.is_dataclass(inputs) and not isinstance(inputs, type):
    return dataclasses.replace(inputs, **{attr: value})
  new = copy.copy(inputs)
  setattr(new, attr, value)
  return new


class TraverseAttr(Traversal):
  """Selects the attribute `attr` (dataclasses, namedtuples, objects)."""

  def __init__(self, attr: str):
    self._attr = attr

  def update(self, fn, inputs):
    return _replace_attr(inputs, self._attr, fn(getattr(inputs, self._attr)))

  def iterate(self, inputs):
    yield getattr(inputs, self._attr)


class TraverseItem(Traversal):
  """Selects `inputs[key]` (a slice: each element it covers) of a dict, list,
  tuple, namedtuple (index or field name) or dataclass (field name)."""

  def __init__(self, key: Any):
    self._key = key

  def _by_field(self, inputs) -> bool:
    return isinstance(self._key, str) and (
        _is_namedtuple(inputs) or
        (dataclasses.is_dataclass(inputs) and not isinstance(inputs, type)))

  def update(self, fn, inputs):
    key = self._key
    if self._by_field(inputs):
      return _replace_attr(inputs, key, fn(getattr(inputs, key)))
    if isinstance(inputs, dict):
      new = _copy_dict(inputs)
      new[key] = fn(inputs[key])
      return new
    if isinstance(inputs, (list, tuple)):
      items = list(inputs)
      indices = (range(*key.indices(len(items))) if isinstance(key, slice)
                 else [key])
      for i in indices:
        items[i] = fn(items[i])
      return _rebuild(inputs, items)
    raise TypeError(f'cannot set item {key!r} of a {type(inputs).__name__}')

  def iterate(self, inputs):
    if self._by_field(inputs):
      yield getattr(inputs, self._key)
    elif isinstance(self._key, slice):
      yield from inputs[self._key]
    else:
      yield inputs[self._key]


class TraverseEach(Traversal):
  """Selects each element of a list/tuple, or each value of a dict."""

  def update(self, fn, inputs):
    if isinstance(inputs, dict):
      new = _copy_dict(inputs)
      for k in inputs:
        new[k] = fn(inputs[k])
      return new
    if isinstance(inputs, (list, tuple)):
      return _rebuild(inputs, [fn(x) for x in inputs])
    raise TypeError(f'each() needs a list, tuple or dict, got '
                    f'{type(inputs).__name__}')

  def iterate(self, inputs):
    yield from inputs.values() if isinstance(inputs, dict) else inputs


class TraverseTree(Traversal):
  """Selects every leaf of a pytree (in `jax.tree_util` order)."""

  def update(self, fn, inputs):
    return jax.tree_util.tree_map(fn, inputs)

  def iterate(self, inputs):
    yield from jax.tree_util.tree_leaves(inputs)
