"""State dicts: pytrees as nested dicts of leaves, and back, strictly checked.

Restoring lists every missing, unexpected and mismatched path in one
`RestoreError`. Another dtype is cast to the target's when safe (same kind,
e.g. float64 to float32, or NumPy-safe, e.g. int8 to float32), else it is a
mismatch. Python numbers match arrays of shape ().
"""
import collections
import contextvars
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import numpy as np

from flaxish.traverse_util import path_str

__all__ = ['to_state_dict', 'from_state_dict', 'register_serialization_state',
           'is_registered', 'RestoreProblem', 'RestoreError', 'join_path']

_REGISTRY: Dict[Any, Any] = {}
_inside_restore = contextvars.ContextVar('flaxish_restore', default=False)
_NUMBERS = (bool, int, float, complex)
_KINDS = (np.bool_, np.signedinteger, np.unsignedinteger, np.floating,
          np.complexfloating)
_KEY = jax.dtypes.prng_key


def join_path(path: str, key: Any) -> str:
  """`path` ('' is the root) extended by `key`, as `path_str` writes it."""
  return path + path_str([key])


class RestoreProblem(NamedTuple):
  """A difference at `path`: `kind` 'missing', 'unexpected' or 'mismatch'."""
  path: str
  kind: str
  message: str
  value: Any = None

  def __str__(self) -> str:
    return f'{self.path}: {self.message}'


class RestoreError(ValueError):
  """The state does not match the target: every difference (`problems`)."""

  def __init__(self, problems: List[RestoreProblem],
               source: Optional[str] = None):
    self.problems, self.source = list(problems), source
    n = collections.Counter(p.kind for p in self.problems)
    counts = ', '.join(f'{n[k]} {k}'.replace('mismatch', 'mismatched') for k
                       in ('missing', 'unexpected', 'mismatch') if n[k])
    super().__init__('\n'.join(
        [f'{f"checkpoint {source}" if source else "the state"} does not '
         f'match the target ({counts}):'] + [f'  {p}' for p in problems] +
        ['Fix the target (or restore from a matching file), or pass '
         'strict=False to restore only the entries that match and get the '
         'skipped ones back.']))


def _signature(x: Any):
  """(shape, dtype) of an array-like leaf (dtype None for a number)."""
  if isinstance(x, _NUMBERS):
    return (), None
  dtype = getattr(x, 'dtype', None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, _KEY):
    x = jax.eval_shape(jax.random.key_data, x)
  try:
    return tuple(x.shape), np.dtype(x.dtype)
  except (AttributeError, TypeError):
    return None


def _describe(x: Any) -> str:
  if isinstance(x, dict):
    n = len(jax.tree_util.tree_leaves(x))
    return f'a subtree of {n} lea{"f" if n == 1 else "ves"}' if x else (
        'an empty subtree')
  sig = _signature(x)
  if sig and sig[1] is not None:
    return f'{sig[1]}[{", ".join(map(str, sig[0]))}]'
  if x is None or isinstance(x, (str, bytes, *_NUMBERS)):
    return 'None' if x is None else f'the {type(x).__name__} {x!r}'
  return f'an object of type {type(x).__name__}'


def _safe_cast(src: np.dtype, dst: np.dtype) -> bool:
  kind = lambda d: next((k for k in _KINDS if jax.dtypes.issubdtype(d, k)), d)
  return kind(src) == kind(dst) or np.can_cast(src, dst, 'safe')


def _match_leaf(target: Any, value: Any) -> Any:
  """(value in the form of target, None) or (target, problem)."""
  # pylint: disable=unidiomatic-typecheck
  t_sig, v_sig = _signature(target), _signature(value)
  arrays = t_sig and v_sig and t_sig[1] is not None and v_sig[1] is not None
  if arrays:
    parts = [f'{what} {v} in the file, {t} in the target' for what, t, v in (
        ('shape', t_sig[0], v_sig[0]), ('dtype', t_sig[1], v_sig[1])) if t != v]
    if t_sig[0] == v_sig[0] and _safe_cast(v_sig[1], t_sig[1]):
      if jax.dtypes.issubdtype(target.dtype, _KEY):
        return jax.random.wrap_key_data(value, impl=jax.random.key_impl(
            target) if isinstance(target, jax.Array) else None), None
      return (value if t_sig[1] == v_sig[1] else
              np.asarray(value).astype(t_sig[1])), None
    if t_sig[1] != v_sig[1] and not _safe_cast(v_sig[1], t_sig[1]):
      parts[-1] += ' (an unsafe cast)'
    return target, '; '.join(parts)
  if (t_sig and v_sig and t_sig[0] == v_sig[0]) or (
      not t_sig and not v_sig and type(target) is type(value)):
    return value, None
  return target, f'{_describe(value)} in the file, {_describe(target)} in ' \
      'the target'


def _match(target: Any, state: Any, path: str, problems: list) -> Any:
  if not (isinstance(target, dict) and isinstance(state, dict)):
    restored, problem = _match_leaf(target, state)
    if problem:
      problems.append(RestoreProblem(path or '/', 'mismatch', problem, state))
    return restored
  merged = {}
  for key, t_value in target.items():
    sub = join_path(path, key)
    merged[key] = _match(t_value, state[key], sub, problems) if (
        key in state) else t_value
    if key not in state:
      problems.append(RestoreProblem(sub, 'missing', 'missing in the file '
                                     f'(the target has {_describe(t_value)})'))
  problems.extend(RestoreProblem(
      join_path(path, k), 'unexpected', 'in the file but not in the target '
      f'({_describe(v)})', v) for k, v in state.items() if k not in target)
  return merged


def _handler(x: Any):
  if isinstance(x, tuple) and hasattr(type(x), '_fields'):
    return _REGISTRY.get(type(x), _REGISTRY[_NamedTuple])
  return _REGISTRY.get(type(x))


def register_serialization_state(ty: type, ty_to_state_dict: Callable,
                                 ty_from_state_dict: Callable,
                                 override: bool = False) -> None:
  """Registers how instances of `ty` (exact type) become state dicts: the
  handlers call `to_state_dict` / `from_state_dict` on children; `state` has
  the structure of `ty_to_state_dict(target)`. Again: `override=True`."""
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
  if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
    raise TypeError(f'the state-dict handler of {type(target).__name__} '
                    f'returned {state!r:.80}, not a dict with str keys')
  return state


def from_state_dict(target: Any, state: Any, name: str = '.', *,
                    strict: bool = True) -> Any:
  """Restores `state` into a copy of `target` (None: returns `state`).

  `strict=True` raises one `RestoreError` listing every difference; False
  restores what matches and returns `(restored, skipped RestoreProblems)`.
  `name` is ignored."""
  del name
  problems = []
  if not _inside_restore.get() and target is not None:
    state = _match(to_state_dict(target), state, '', problems)
    if problems and strict:
      raise RestoreError(problems)
  handler = _handler(target)
  token = _inside_restore.set(True)  # handlers' nested calls: checked above
  try:
    restored = handler[1](target, state) if handler else state
  finally:
    _inside_restore.reset(token)
  return restored if strict else (restored, problems)


class _NamedTuple:
  """Registry key shared by all namedtuple classes."""


def _dict_to_state(xs: Dict[Any, Any]) -> Dict[str, Any]:
  state = {str(k): to_state_dict(v) for k, v in xs.items()}
  if len(state) != len(xs):
    raise ValueError(f'dict keys {sorted(map(repr, xs))} do not have unique '
                     'str forms, so they cannot be state dict keys')
  return state


def _list_from_state(xs, state) -> list:
  return [from_state_dict(v, state[str(i)]) for i, v in enumerate(xs)]


for _ty in (dict, collections.OrderedDict):
  register_serialization_state(_ty, _dict_to_state, lambda xs, s: type(xs)(
      (k, from_state_dict(v, s[str(k)])) for k, v in xs.items()))
register_serialization_state(list, lambda xs: _dict_to_state(
    dict(enumerate(xs))), _list_from_state)
register_serialization_state(tuple, _REGISTRY[list][0],
                             lambda xs, s: tuple(_list_from_state(xs, s)))
register_serialization_state(_NamedTuple, lambda nt: {
    'name': type(nt).__name__,
    'fields': {str(i): name for i, name in enumerate(nt._fields)},
    'values': _dict_to_state(dict(enumerate(nt)))}, lambda nt, s: type(nt)(
        *_list_from_state(nt, s['values'])))
