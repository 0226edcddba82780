"""Matching a state dict read from a file against a target's state dict.

`match_state(target_state, state)` walks both nested dicts together and lists
every problem at once: paths missing from the file, paths in the file that
the target does not have, and leaves whose shape, dtype or kind differ.
Where a problem is found the target's value is kept, so the merged state
always has the target's structure and any registered `from_state_dict`
handler can restore it. `RestoreError` reports the problems in one message.

Leaf rules: arrays (NumPy, JAX, `jax.ShapeDtypeStruct`) must agree in shape
and dtype exactly. Python numbers are lenient: a Python int, float, bool or
complex matches another Python number or an array of shape (). Strings and
bytes (such as a namedtuple's field names) must be equal. A typed PRNG key
array in the target matches its raw `uint32` key data in the file, and is
restored as a key array.
"""
from typing import Any, List, NamedTuple, Optional, Tuple

import jax
import numpy as np

from flaxish.serialization import host
from flaxish.serialization.paths import display_path, join_path

__all__ = ['RestoreProblem', 'RestoreError', 'match_state']

_NUMBER_TYPES = (bool, int, float, complex)


class RestoreProblem(NamedTuple):
  """One difference between a file and a target.

  Attributes:
    path: where, e.g. '/params/Dense_0/kernel' ('/' is the root).
    kind: 'missing' (in the target, not in the file), 'unexpected' (in the
      file, not in the target) or 'mismatch' (both, but incompatible).
    message: what differs, e.g. 'shape (3, 4) in the file, (3, 5) in the
      target'.
    value: the file's value there (None for 'missing'); not restored.
  """
  path: str
  kind: str
  message: str
  value: Any = None

  def __str__(self) -> str:
    return f'{self.path}: {self.message}'


class RestoreError(ValueError):
  """The state does not match the target; `problems` lists every difference.

  Arguments:
    problems: the `RestoreProblem`s.
    source: what was read (e.g. a checkpoint file), named in the message.
  """

  def __init__(self, problems: List[RestoreProblem],
               source: Optional[str] = None):
    self.problems = list(problems)
    self.source = source
    counts = []
    for kind, word in (('missing', 'missing'), ('unexpected', 'unexpected'),
                       ('mismatch', 'mismatched')):
      n = sum(p.kind == kind for p in self.problems)
      if n:
        counts.append(f'{n} {word}')
    what = f'checkpoint {source}' if source else 'the state'
    lines = [f'{what} does not match the target ({", ".join(counts)}):']
    lines += [f'  {p}' for p in self.problems]
    lines.append('Fix the target (or restore from a matching file), or pass '
                 'strict=False to restore only the entries that match and get '
                 'the skipped ones back.')
    super().__init__('\n'.join(lines))


def _count_leaves(x: Any) -> int:
  if isinstance(x, dict):
    return sum(_count_leaves(v) for v in x.values())
  return 1


def _describe(x: Any) -> str:
  if isinstance(x, dict):
    n = _count_leaves(x)
    if not x:
      return 'an empty subtree'
    return f'a subtree of {n} lea{"f" if n == 1 else "ves"}'
  sig = _array_signature(x)
  if sig is not None and not isinstance(x, _NUMBER_TYPES):
    shape, dtype = sig
    return f'{dtype}[{", ".join(map(str, shape))}]'
  if isinstance(x, (str, bytes, *_NUMBER_TYPES)) or x is None:
    return f'the {type(x).__name__} {x!r}' if x is not None else 'None'
  return f'an object of type {type(x).__name__}'


def _array_signature(x: Any) -> Optional[Tuple[Tuple[int, ...], Any]]:
  """(shape, dtype) of an array-like leaf; dtype is None for Python numbers."""
  if isinstance(x, _NUMBER_TYPES):
    return (), None
  if host.is_key_array(x):
    data = jax.eval_shape(jax.random.key_data, x)
    return tuple(data.shape), np.dtype(data.dtype)
  shape = getattr(x, 'shape', None)
  dtype = getattr(x, 'dtype', None)
  if shape is None or dtype is None:
    return None
  try:
    return tuple(shape), np.dtype(dtype)
  except TypeError:
    return None


def _leaf_problem(target: Any, value: Any) -> Optional[str]:
  """Why `value` (from the file) cannot replace `target`, or None."""
  t_sig, v_sig = _array_signature(target), _array_signature(value)

  def different():
    return f'{_describe(value)} in the file, {_describe(target)} in the target'

  if t_sig is not None and v_sig is not None:
    (t_shape, t_dtype), (v_shape, v_dtype) = t_sig, v_sig
    if t_dtype is None or v_dtype is None:  # a Python number on one side
      return None if t_shape == v_shape else different()
    parts = []
    if t_shape != v_shape:
      parts.append(f'shape {v_shape} in the file, {t_shape} in the target')
    if t_dtype != v_dtype:
      parts.append(f'dtype {v_dtype} in the file, {t_dtype} in the target')
    return '; '.join(parts) or None
  same_type = type(target) is type(value)  # pylint: disable=unidiomatic-typecheck
  if t_sig is None and v_sig is None and same_type:
    return None
  return different()


def _adapt(target: Any, value: Any) -> Any:
  """`value` in the form of `target` (raw key data becomes a key array)."""
  if host.is_key_array(target):
    try:
      impl = jax.random.key_impl(target)
    except (TypeError, ValueError, AttributeError):
      impl = None
    return jax.random.wrap_key_data(value, impl=impl)
  return value


def _match(target: Any, state: Any, path: str,
           problems: List[RestoreProblem]) -> Any:
  if isinstance(target, dict) and isinstance(state, dict):
    merged = {}
    for key, t_value in target.items():
      sub = join_path(path, key)
      if key in state:
        merged[key] = _match(t_value, state[key], sub, problems)
      else:
        problems.append(RestoreProblem(
            sub, 'missing',
            f'missing in the file (the target has {_describe(t_value)})'))
        merged[key] = t_value
    for key, value in state.items():
      if key not in target:
        problems.append(RestoreProblem(
            join_path(path, key), 'unexpected',
            f'in the file but not in the target ({_describe(value)})', value))
    return merged
  if isinstance(target, dict) or isinstance(state, dict):
    problem = (f'{_describe(state)} in the file, {_describe(target)} in the '
               'target')
  else:
    problem = _leaf_problem(target, state)
  if problem is not None:
    problems.append(RestoreProblem(display_path(path), 'mismatch', problem,
                                   state))
    return target
  return _adapt(target, state)


def match_state(target_state: Any,
                state: Any) -> Tuple[List[RestoreProblem], Any]:
  """Compares `state` (from a file) with `target_state` (the target's).

  Returns:
    (problems, merged): every `RestoreProblem`, in the target's order with
    unexpected entries after their siblings, and the target's state with
    each matching leaf replaced by the file's.
  """
  problems: List[RestoreProblem] = []
  merged = _match(target_state, state, '', problems)
  return problems, merged
