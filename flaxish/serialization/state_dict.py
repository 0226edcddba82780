"""State dicts: turn pytrees into nested dicts of arrays and back.

A per-type registry maps a type to a `to_state_dict(x) -> dict` and a
`from_state_dict(target, state) -> x` function. Unregistered types pass through
unchanged (they are leaves).
"""
from typing import Any, Callable, Dict, Tuple

__all__ = ['to_state_dict', 'from_state_dict', 'register_serialization_state',
           'is_registered']

_REGISTRY: Dict[type, Tuple[Callable, Callable]] = {}


def register_serialization_state(ty: type, ty_to_state_dict: Callable,
                                 ty_from_state_dict: Callable,
                                 override: bool = False) -> None:
  """Registers how instances of `ty` become state dicts and come back."""
  if ty in _REGISTRY and not override:
    raise ValueError(f'a serialization handler for "{ty.__name__}" is already '
                     'registered; pass override=True to replace it')
  _REGISTRY[ty] = (ty_to_state_dict, ty_from_state_dict)


def is_registered(ty: type) -> bool:
  return ty in _REGISTRY


def to_state_dict(target: Any) -> Any:
  """Returns the state dict of `target` (nested dicts with string keys)."""
  handler = _REGISTRY.get(type(target))
  if handler is None:
    return target
  state = handler[0](target)
  if isinstance(state, dict):
    assert all(isinstance(k, str) for k in state), 'state dict keys must be str'
  return state


def from_state_dict(target: Any, state: Any) -> Any:
  """Restores `state` into a copy of `target` (used only for its structure)."""
  handler = _REGISTRY.get(type(target))
  if handler is None:
    return state
  return handler[1](target, state)


def _dict_to_state(xs):
  return {str(k): to_state_dict(v) for k, v in xs.items()}


def _dict_from_state(xs, state):
  return {k: from_state_dict(v, state[str(k)]) for k, v in xs.items()}


def _list_to_state(xs):
  return {str(i): to_state_dict(v) for i, v in enumerate(xs)}


def _list_from_state(xs, state):
  return [from_state_dict(v, state[str(i)]) for i, v in enumerate(xs)]


def _tuple_from_state(xs, state):
  return tuple(_list_from_state(xs, state))


register_serialization_state(dict, _dict_to_state, _dict_from_state)
register_serialization_state(list, _list_to_state, _list_from_state)
register_serialization_state(tuple, _list_to_state, _tuple_from_state)
