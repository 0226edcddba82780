"""State dicts: pytrees as nested dicts of leaves, and back, strictly checked.

A registry maps a type to `to_state_dict(x) -> dict` and `from_state_dict(
target, state) -> x` (the 2020 signatures). Built in: dict, OrderedDict, list
and tuple (`{'0': .., '1': ..}`), namedtuples (`{'name', 'fields',
'values'}`); `struct.dataclass` registers each dataclass. Other types are
leaves. `from_state_dict` compares `state` with `to_state_dict(target)` and
lists every missing, unexpected and mismatched path in one `RestoreError`.
Leaves: shapes must be equal; another dtype is cast to the target's when the
cast is safe (same kind, such as float64 to float32, or NumPy-safe, such as
int8 to float32) and is a mismatch otherwise (float to int). Python numbers
match numbers and arrays of shape (); typed PRNG keys match their key data.
"""
import collections
import contextvars
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import jax
import numpy as np

__all__ = ['to_state_dict', 'from_state_dict', 'register_serialization_state',
           'is_registered', 'RestoreProblem', 'RestoreError', 'join_path']

_REGISTRY: Dict[Any, Any] = {}
_inside_restore = contextvars.ContextVar('flaxish_restore', default=False)
_NUMBERS = (bool, int, float, complex)
_KINDS = (np.bool_, np.signedinteger, np.unsignedinteger, np.floating,
          np.complexfloating)
_KEY = jax.dtypes.prng_key


def join_path(path: str, key: Any) -> str:
  """`path` + '/' + `key` ('' is the root); keys with '/' are quoted."""
  key = str(key)
  return f'{path}/{repr(key) if not key or "/" in key else key}'


class RestoreProblem(NamedTuple):
  """One difference: `path` ('/' is the root), `kind` ('missing',
  'unexpected' or 'mismatch'), `message`, the file's `value` there."""
  path: str
  kind: str
  message: str
  value: Any = None

  def __str__(self) -> str:
    return f'{self.path}: {self.message}'


class RestoreError(ValueError):
  """The state does not match the target: `problems` lists every difference,
  `source` names what was read (e.g. a checkpoint file)."""

  def __init__(self, problems: List[RestoreProblem],
               source: Optional[str] = None):
    self.problems, self.source = list(problems), source
    counts = ', '.join(f'{n} {word}' for n, word in (
        (sum(p.kind == k for p in self.problems), w) for k, w in (
            ('missing', 'missing'), ('unexpected', 'unexpected'),
            ('mismatch', 'mismatched'))) if n)
    lines = [f'{f"checkpoint {source}" if source else "the state"} does not '
             f'match the target ({counts}):'] + [f'  {p}' for p in problems]
    super().__init__('\n'.join(lines + [
        'Fix the target (or restore from a matching file), or pass '
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
  try:
    return kind(src) == kind(dst) or np.can_cast(src, dst, 'safe')
  except TypeError:
    return False


def _match_leaf(target: Any, value: Any) -> Any:
  """(value in the form of target, None) or (target, problem)."""
  t_sig, v_sig = _signature(target), _signature(value)
  arrays = t_sig and v_sig and t_sig[1] is not None and v_sig[1] is not None
  if arrays:
    parts = [f'{what} {v} in the file, {t} in the target' for what, t, v in (
        ('shape', t_sig[0], v_sig[0]), ('dtype', t_sig[1], v_sig[1])) if t != v]
    if t_sig[0] == v_sig[0] and _safe_cast(v_sig[1], t_sig[1]):
      if jax.dtypes.issubdtype(target.dtype, _KEY):
        try:
          impl = jax.random.key_impl(target)
        except (TypeError, ValueError, AttributeError):  # a ShapeDtypeStruct
          impl = None
        return jax.random.wrap_key_data(value, impl=impl), None
      return (value if t_sig[1] == v_sig[1] else
              np.asarray(value).astype(t_sig[1])), None
    if t_sig[1] != v_sig[1] and not _safe_cast(v_sig[1], t_sig[1]):
      parts[-1] += ' (an unsafe cast)'
    return target, '; '.join(parts)
  if (t_sig and v_sig and t_sig[0] == v_sig[0]) or (
      not t_sig and not v_sig and type(target) is type(value)):  # pylint: disable=unidiomatic-typecheck
    return value, None
  return target, f'{_describe(value)} in the file, {_describe(target)} in ' \
      'the target'


def _match(target: Any, state: Any, path: str, problems: list) -> Any:
  if isinstance(target, dict) and isinstance(state, dict):
    merged = {}
    for key, t_value in target.items():
      sub = join_path(path, key)
      if key in state:
        merged[key] = _match(t_value, state[key], sub, problems)
      else:
        merged[key] = t_value
        problems.append(RestoreProblem(sub, 'missing', 'missing in the file '
                                       f'(the target has {_describe(t_value)})'))
    problems.extend(RestoreProblem(
        join_path(path, k), 'unexpected', 'in the file but not in the target '
        f'({_describe(v)})', v) for k, v in state.items() if k not in target)
    return merged
  if isinstance(target, dict) or isinstance(state, dict):
    restored, problem = target, (f'{_describe(state)} in the file, '
                                 f'{_describe(target)} in the target')
  else:
    restored, problem = _match_leaf(target, state)
  if problem:
    problems.append(RestoreProblem(path or '/', 'mismatch', problem, state))
  return restored


def _handler(x: Any):
  if isinstance(x, tuple) and hasattr(type(x), '_fields'):
    return _REGISTRY.get(type(x), _REGISTRY[_NamedTuple])
  return _REGISTRY.get(type(x))


def register_serialization_state(ty: type, ty_to_state_dict: Callable,
                                 ty_from_state_dict: Callable,
                                 override: bool = False) -> None:
  """Registers how instances of `ty` (exact type) become state dicts.

  `ty_to_state_dict(x) -> dict` (str keys) and `ty_from_state_dict(target,
  state) -> restored copy` call `to_state_dict` / `from_state_dict` on
  children; `state` has the structure of `ty_to_state_dict(target)`. A
  second registration of `ty` needs `override=True`.
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


def from_state_dict(target: Any, state: Any, name: str = '.', *,
                    strict: bool = True) -> Any:
  """Restores `state` into a copy of `target` (see the module docstring).

  Arguments:
    target: gives the structure, shapes and dtypes (None: return `state`).
    state: a state dict, e.g. from `msgpack_restore`.
    name: ignored (later flax versions pass the child's name).
    strict: raise on any difference (default); with False restore what
      matches, keep the target's value elsewhere and return `(restored,
      skipped)`, `skipped` a list of `RestoreProblem`.
  Raises:
    RestoreError: (strict) every missing, unexpected and mismatched path.
  """
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
