"""State dicts: pytrees as nested dicts of leaves, and back.

A per-type registry maps a type to `to_state_dict(x) -> dict` and
`from_state_dict(target, state) -> x`, the 2020 flax signatures, so handlers
written for flax register unchanged. Built in: dict and OrderedDict (keys as
str), list and tuple (`{'0': .., '1': ..}`), namedtuples (`{'name', 'fields',
'values'}`, the 2020 layout); `struct.dataclass` registers each dataclass.
Unregistered types are leaves and pass through unchanged.

Restoring is strict by default: `from_state_dict` first compares `state`
with `to_state_dict(target)` through the registry (so every registered type,
including ones registered later, is checked) and raises one `RestoreError`
listing every missing, unexpected and mismatched path. Handlers then receive
a state with exactly the target's structure; their nested `from_state_dict`
calls skip the check.
"""
import collections
import contextvars
from typing import Any, Callable, Dict, Tuple

from flaxish.serialization.matching import RestoreError, match_state

__all__ = ['to_state_dict', 'from_state_dict', 'register_serialization_state',
           'is_registered']

_REGISTRY: Dict[Any, Tuple[Callable, Callable]] = {}
_inside_restore = contextvars.ContextVar('flaxish_inside_restore',
                                         default=False)


class _NamedTuple:
  """Registry key shared by all namedtuple classes."""


def _is_namedtuple(x: Any) -> bool:
  return isinstance(x, tuple) and hasattr(type(x), '_fields')


def _handler(x: Any):
  handler = _REGISTRY.get(type(x))
  if handler is None and _is_namedtuple(x):
    handler = _REGISTRY.get(_NamedTuple)
  return handler


def register_serialization_state(ty: type, ty_to_state_dict: Callable,
                                 ty_from_state_dict: Callable,
                                 override: bool = False) -> None:
  """Registers how instances of `ty` become state dicts and come back.

  Arguments:
    ty: the class (exact type; subclasses need their own registration).
    ty_to_state_dict: `x -> dict` with str keys; call `to_state_dict` on
      children.
    ty_from_state_dict: `(target, state) -> restored copy of target`; call
      `from_state_dict(child_target, child_state)` on children. `state`
      always has the structure of `ty_to_state_dict(target)`.
    override: replace an existing registration (default False: error).
  """
  if ty in _REGISTRY and not override:
    raise ValueError(f'a serialization handler for "{ty.__name__}" is already '
                     'registered; pass override=True to replace it')
  _REGISTRY[ty] = (ty_to_state_dict, ty_from_state_dict)


def is_registered(ty: type) -> bool:
  """Whether `ty` has a state-dict handler."""
  return ty in _REGISTRY


def to_state_dict(target: Any) -> Any:
  """The state dict of `target`: nested dicts with str keys, leaves as is."""
  handler = _handler(target)
  if handler is None:
    return target
  state = handler[0](target)
  if not isinstance(state, dict):
    raise TypeError(f'the state-dict handler of {type(target).__name__} '
                    f'returned a {type(state).__name__}, not a dict')
  for key in state:
    if not isinstance(key, str):
      raise TypeError(f'the state dict of {type(target).__name__} has the '
                      f'non-str key {key!r}')
  return state


def _dispatch(target: Any, state: Any) -> Any:
  handler = _handler(target)
  if handler is None:
    return state
  return handler[1](target, state)


def from_state_dict(target: Any, state: Any, name: str = '.', *,
                    strict: bool = True) -> Any:
  """Restores `state` into a copy of `target`.

  The target gives the structure and the expected shapes and dtypes; its
  leaf values are not used.

  Arguments:
    target: the object to restore (a Model, Optimizer, dict, ...). None
      returns `state` as it is (the raw nested dict).
    state: a state dict, e.g. from `msgpack_restore`.
    name: ignored; accepted so that handlers written for later flax
      versions, which pass the child's name, also work (paths in messages
      are found without it).
    strict: raise on any difference (default). With False, restore what
      matches, keep the target's value elsewhere, and also return what was
      skipped.
  Returns:
    The restored copy; with `strict=False` a pair `(restored, skipped)`,
    `skipped` a list of `RestoreProblem` (path, kind, message, file value).
  Raises:
    RestoreError: (strict) every missing, unexpected and mismatched path,
      in one message.
  """
  del name
  if _inside_restore.get():  # a handler restoring a child: already checked
    restored = _dispatch(target, state)
    return restored if strict else (restored, [])
  if target is None:
    return state if strict else (state, [])
  problems, merged = match_state(to_state_dict(target), state)
  if problems and strict:
    raise RestoreError(problems)
  token = _inside_restore.set(True)
  try:
    restored = _dispatch(target, merged)
  finally:
    _inside_restore.reset(token)
  return restored if strict else (restored, problems)


def _dict_to_state(xs: Dict[Any, Any]) -> Dict[str, Any]:
  state = {str(k): to_state_dict(v) for k, v in xs.items()}
  if len(state) != len(xs):
    raise ValueError(f'dict keys {sorted(map(repr, xs))} do not have unique '
                     'str forms, so they cannot be state dict keys')
  return state


def _dict_from_state(xs: Dict[Any, Any], state: Dict[str, Any]):
  return type(xs)((k, from_state_dict(v, state[str(k)]))
                  for k, v in xs.items())


def _list_to_state(xs) -> Dict[str, Any]:
  return {str(i): to_state_dict(v) for i, v in enumerate(xs)}


def _list_from_state(xs, state: Dict[str, Any]) -> list:
  return [from_state_dict(v, state[str(i)]) for i, v in enumerate(xs)]


def _namedtuple_to_state(nt) -> Dict[str, Any]:
  return {
      'name': type(nt).__name__,
      'fields': {str(i): name for i, name in enumerate(nt._fields)},
      'values': {str(i): to_state_dict(getattr(nt, name))
                 for i, name in enumerate(nt._fields)},
  }


def _namedtuple_from_state(nt, state: Dict[str, Any]):
  values = state['values']
  return type(nt)(*(from_state_dict(getattr(nt, name), values[str(i)])
                    for i, name in enumerate(nt._fields)))


register_serialization_state(dict, _dict_to_state, _dict_from_state)
register_serialization_state(collections.OrderedDict, _dict_to_state,
                             _dict_from_state)
register_serialization_state(list, _list_to_state, _list_from_state)
register_serialization_state(
    tuple, _list_to_state, lambda xs, state: tuple(_list_from_state(xs, state)))
register_serialization_state(_NamedTuple, _namedtuple_to_state,
                             _namedtuple_from_state)
