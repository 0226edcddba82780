"""State that lives outside the parameters: `Collection` and `nn.stateful`.

A Collection maps module paths (relative to the frame where it was created,
its anchor) to values, e.g. BatchNorm running statistics. It is immutable
unless opened with `mutate()` (or `nn.stateful()`); an immutable collection is
a pytree and can go through `jit`/`pmap`; a mutable one cannot.
"""
import contextlib
import functools
from typing import Any, Dict, Iterator, Optional

import jax

from flaxish.nn import frame as frame_lib
from flaxish.nn._util import CallStack, is_tracer, trace_state
from flaxish.serialization.state_dict import (from_state_dict,
                                              register_serialization_state,
                                              to_state_dict)

__all__ = ['Collection', 'ModuleState', 'stateful', 'get_state',
           'is_stateful', 'iterate_collection', 'collection_from_iterable']

_state_stack: CallStack['Collection'] = CallStack()


class Collection:
  """Values keyed by module path, e.g. `{'/BatchNorm_0': {'mean': ..}}`.

  Arguments:
    state: an initial `{path: value}` dict (default empty).
  """

  def __init__(self, state: Optional[Dict[str, Any]] = None):
    self.state = dict(state) if state else {}
    self._mutable = False
    self._anchor = frame_lib.module_stack.top()
    self._trace_state = None
    self._unnamed_root = None

  def __init_subclass__(cls, **kwargs):
    # Subclasses (such as nn.attention.Cache) are pytrees and serialize too.
    super().__init_subclass__(**kwargs)
    jax.tree_util.register_pytree_with_keys(
        cls, _flatten_with_keys, functools.partial(_unflatten, cls=cls),
        flatten_func=_flatten)
    register_serialization_state(cls, _collection_to_state,
                                 _collection_from_state, override=True)

  def as_dict(self) -> Dict[str, Any]:
    """A copy of the `{path: value}` dict."""
    return dict(self.state)

  def replace_state(self, state: Dict[str, Any]) -> 'Collection':
    """An immutable Collection of this class and anchor holding `state`."""
    return _unflatten((tuple(state), self._anchor), tuple(state.values()),
                      cls=type(self))

  def __getitem__(self, path: str) -> Any:
    return self.state[path]

  def __contains__(self, path: str) -> bool:
    return path in self.state

  def __repr__(self) -> str:
    kind = 'mutable ' if self._mutable else ''
    return f'<{kind}Collection {sorted(self.state)}>'

  def _current_path(self, check_root: bool = True) -> str:
    frame = frame_lib.module_stack.top()
    if frame is None:
      raise ValueError('a Collection can only be read or written inside a '
                       'Module.apply (state is keyed by module path)')
    if self._anchor is None:
      if check_root and frame.root.name is None:
        if self._unnamed_root is None:
          self._unnamed_root = frame.root
        elif self._unnamed_root is not frame.root:
          raise ValueError(
              'two unnamed top-level modules write into the same Collection, '
              f'so their paths (like "{frame.path}") would collide; give '
              'the top-level modules distinct names with name=')
      return frame.path
    if not frame.is_descendant_of(self._anchor):
      raise ValueError(
          f'module "{frame.path}" is outside the subtree of '
          f'"{self._anchor.path}", where this Collection was created, so it '
          'cannot use it (was a shared module passed down?)')
    relative = frame.path[len(self._anchor.path.rstrip('/')):]
    return relative or '/'

  def retrieve(self, default: Any = None) -> Any:
    """The value stored for the current module, or `default`."""
    return self.state.get(self._current_path(check_root=False), default)

  def store(self, value: Any) -> None:
    """Stores `value` for the current module (needs a mutable collection)."""
    self._check_store(self._current_path(check_root=False), value)
    self.state[self._current_path()] = value

  def _check_store(self, path: str, value: Any) -> None:
    if not self._mutable:
      raise ValueError(
          f'cannot store state for "{path}": the Collection is immutable. '
          'Open it with `with nn.stateful(collection) as new_state:` or '
          '`with collection.mutate() as new_state:` and use new_state')
    if (self._trace_state != trace_state() and
        any(is_tracer(x) for x in jax.tree_util.tree_leaves(value))):
      raise ValueError(
          f'cannot store a traced value for "{path}": this Collection was '
          'made mutable outside the current JAX transformation (jit, grad, '
          'vmap, scan, ...), so the value would leak out of it. Open '
          '`nn.stateful(...)` inside the transformed function and return '
          'the new state from it')

  @contextlib.contextmanager
  def mutate(self) -> Iterator['Collection']:
    """Yields a mutable copy; it becomes immutable when the block exits."""
    new = self.replace_state(self.state)
    new._trace_state = trace_state()
    new._mutable = True
    try:
      yield new
    finally:
      new._mutable = False


def _flatten(collection: Collection):
  """`(values in path order, (paths, anchor))`."""
  if collection._mutable:  # pylint: disable=protected-access
    raise ValueError(
        'a mutable Collection cannot be passed through a JAX transformation '
        '(jit, pmap, vmap, grad arguments or outputs): leave the '
        '`nn.stateful()` / `mutate()` block first and pass the collection '
        'it produced, which is immutable')
  keys = tuple(sorted(collection.state))
  return ([collection.state[k] for k in keys],
          (keys, collection._anchor))  # pylint: disable=protected-access


def _flatten_with_keys(collection: Collection):
  values, aux = _flatten(collection)
  return [(jax.tree_util.DictKey(k), v) for k, v in zip(aux[0], values)], aux


def _unflatten(aux, values, cls=None) -> Collection:
  keys, anchor = aux
  cls = cls or Collection
  collection = cls.__new__(cls)
  collection.state = dict(zip(keys, values))
  collection._anchor = anchor
  collection._trace_state = None
  collection._unnamed_root = None
  collection._mutable = False
  return collection


jax.tree_util.register_pytree_with_keys(Collection, _flatten_with_keys,
                                        _unflatten, flatten_func=_flatten)


def iterate_collection(collection: Collection):
  """The 2020 flatten: `((state dict,), (type, anchor))`; refuses mutable."""
  values, (keys, anchor) = _flatten(collection)
  return (dict(zip(keys, values)),), (type(collection), anchor)


def collection_from_iterable(meta, state) -> Collection:
  """The 2020 unflatten, the inverse of `iterate_collection`."""
  cls, anchor = meta
  return _unflatten((tuple(state[0]), anchor), tuple(state[0].values()),
                    cls=cls)


def _collection_to_state(collection: Collection) -> Dict[str, Any]:
  return {path: to_state_dict(v) for path, v in collection.state.items()}


def _collection_from_state(target: Collection, state: Dict[str, Any]):
  return target.replace_state({
      path: (from_state_dict(target.state[path], value)
             if path in target.state else value)
      for path, value in state.items()})


register_serialization_state(Collection, _collection_to_state,
                             _collection_from_state, override=True)


class ModuleState:
  """A state variable of one module: read and write it through `.value`."""

  def __init__(self, collection: Collection, name: str):
    self._collection = collection
    self._name = name

  @property
  def name(self) -> str:
    """The variable's name in its module's state."""
    return self._name

  @property
  def value(self) -> Any:
    state = self._collection.retrieve(default={})
    if self._name not in state:
      # pylint: disable-next=protected-access
      path = self._collection._current_path(check_root=False)
      raise ValueError(
          f'no state variable "{self._name}" for module "{path}" in this '
          'Collection: initialize it first (run the model at init time '
          'under `with nn.stateful() as state:`) and pass that state in')
    return state[self._name]

  @value.setter
  def value(self, new_value: Any) -> None:
    state = dict(self._collection.retrieve(default={}))
    state[self._name] = new_value
    self._collection.store(state)


@contextlib.contextmanager
def stateful(state: Optional[Collection] = None,
             mutable: bool = True) -> Iterator[Collection]:
  """Makes a Collection the default one for `Module.state`.

  The three idioms: `with nn.stateful() as state:` at init time,
  `with nn.stateful(state) as new_state:` to train (updates go to
  new_state), and `with nn.stateful(state, mutable=False):` to evaluate.
  """
  if state is None:
    state = Collection()
  elif not isinstance(state, Collection):
    raise TypeError(f'nn.stateful expects a Collection or None, got '
                    f'{type(state).__name__}')
  if mutable:
    with state.mutate() as new_state:
      with _state_stack.scope(new_state):
        yield new_state
  else:
    with _state_stack.scope(state):
      yield state


def get_state() -> Collection:
  """The Collection of the innermost `nn.stateful()` block."""
  state = _state_stack.top()
  if state is None:
    raise ValueError('no active state: use `with nn.stateful(...)` around '
                     'the call, or pass collection= to Module.state()')
  return state


def is_stateful() -> bool:
  """True inside a `nn.stateful()` block."""
  return bool(_state_stack)
