"""Parameter keys and initial values: one compiled call per parameter.

A parameter's key is its frame's key folded with the SHA-1 hashes of the
names on its path (`fold_in(fold_in(rng, h('Dense_0')), h('kernel'))`). With
a concrete rng, frames keep that derivation symbolic (`LazyKey`: the root key
and the hashes so far) and compute nothing. A parameter is then made by ONE
jitted call `initializer(fold_in(...fold_in(root, h1)..., hk), shape)`,
compiled once per (initializer, shape) and reused across `init` calls, instead
of one eager dispatch (and one XLA compile per shape) for every fold-in and
every operation of the initializer.

The values are bit-identical to the eager computation: key derivation is
integer arithmetic, the initializers are compiled without XLA's algebraic
simplifier (which reassociates floating-point products), and initializers
that compute in a float narrower than 32 bits stay eager (XLA drops rounding
round trips such as float32 -> bfloat16 -> float32). `tests/nn/
test_param_init.py` compares every library initializer with its eager value.

Only initializers known to be pure functions of `(key, shape)` that return
arrays take this path: functions defined in `jax.nn.initializers` or in
`flaxish.nn` (and `functools.partial`s of them), whose closures and defaults
hold only plain values (numbers, strings, dtypes, tuples, such functions).
Any other initializer (user code, data-dependent init, closures over arrays)
runs eagerly on the computed key, exactly as before.
"""
import collections
import functools
import types
from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from flaxish.nn.utils import hash_name, is_tracer

__all__ = ['LazyKey', 'fold_in_name', 'materialize', 'split',
           'initialize']

# Modules whose initializers are pure functions of (key, shape).
_TRUSTED_MODULES = ('jax._src.nn.initializers', 'jax.nn.initializers',
                    'flaxish.nn.')
_MAX_CACHED = 1024
# XLA's algebraic simplifier reassociates floating-point products with
# constants (`(x * sqrt(2)) * stddev` -> `x * (sqrt(2) * stddev)`), which
# changes the last bit of `normal(stddev)` against eager execution, where each
# operation is its own program. Without it the compiled initializer computes
# what the eager one does, operation by operation.
_AS_EAGER = {'xla_disable_hlo_passes': 'algsimp'}
_UNCACHEABLE = object()


class LazyKey:
  """`fold_in(... fold_in(root, hashes[0]) ..., hashes[-1])`, not computed.

  Attributes:
    root: a concrete PRNG key (raw uint32[2] or typed).
    hashes: a tuple of uint32 name hashes.
  """
  __slots__ = ('root', 'hashes')

  def __init__(self, root: Any, hashes: Tuple[int, ...]):
    self.root = root
    self.hashes = hashes

  def __repr__(self):
    return f'LazyKey(root={self.root!r}, hashes={self.hashes})'


def fold_in_name(rng: Any, name: str) -> Any:
  """The key of child or parameter `name`: `fold_in(rng, sha1(name)[:4])`.

  Concrete keys give a `LazyKey` (no computation); traced keys a traced key.
  """
  h = hash_name(name)
  if isinstance(rng, LazyKey):
    return LazyKey(rng.root, rng.hashes + (h,))
  if is_tracer(rng):
    return jax.random.fold_in(rng, h)
  return LazyKey(rng, (h,))


def _fold_chain(root, hashes):
  key = root
  for i in range(hashes.shape[0]):
    key = jax.random.fold_in(key, hashes[i])
  return key


@jax.jit
def _materialize(root, hashes):
  return _fold_chain(root, hashes)


@jax.jit
def _chain_split(root, hashes):
  keys = jax.random.split(_fold_chain(root, hashes))
  return keys[0], keys[1]


def _hash_array(hashes: Tuple[int, ...]) -> np.ndarray:
  return np.array(hashes, dtype=np.uint32)


def materialize(rng: Any) -> Any:
  """The key a `LazyKey` stands for (other keys are returned as they are)."""
  if not isinstance(rng, LazyKey):
    return rng
  with jax.ensure_compile_time_eval():
    return _materialize(rng.root, _hash_array(rng.hashes))


def split(rng: Any) -> Tuple[Any, Any]:
  """`jax.random.split(rng)` as a pair; concrete keys give concrete keys."""
  if is_tracer(rng):
    return tuple(jax.random.split(rng))
  if not isinstance(rng, LazyKey):
    rng = LazyKey(rng, ())
  with jax.ensure_compile_time_eval():
    return _chain_split(rng.root, _hash_array(rng.hashes))


# ---- which initializers can be compiled once and shared ----------------------

def _value_signature(value: Any, depth: int) -> Any:
  """A hashable stand-in for a plain value, or _UNCACHEABLE."""
  if value is None or isinstance(value, (bool, int, float, complex, str)):
    return (type(value).__name__, repr(value))  # repr: -0.0, nan, 1 vs 1.0
  if isinstance(value, (np.dtype, type)):
    return _dtype_signature(value)
  if isinstance(value, (tuple, list)):
    items = tuple(_value_signature(v, depth) for v in value)
    if any(item is _UNCACHEABLE for item in items):
      return _UNCACHEABLE
    return (type(value).__name__, items)
  if callable(value):
    sig = _signature(value, depth + 1)
    return _UNCACHEABLE if sig is None else sig
  return _UNCACHEABLE


def _dtype_signature(value: Any) -> Any:
  """Dtypes and classes; _UNCACHEABLE for floats narrower than 32 bits.

  Under `jit`, XLA drops a round trip such as float32 -> bfloat16 -> float32
  (an initializer drawing in bfloat16 whose result is cast up), which eager
  execution rounds: such initializers stay eager, so values never change.
  """
  try:
    dtype = np.dtype(value)
  except TypeError:
    return ('type', value) if isinstance(value, type) else _UNCACHEABLE
  if jnp.issubdtype(dtype, jnp.inexact) and jnp.finfo(dtype).bits < 32:
    return _UNCACHEABLE
  return ('dtype', value, dtype)


def _signature(fn: Callable[..., Any], depth: int = 0) -> Optional[Any]:
  """A hashable description of a trusted initializer, or None.

  Two initializers with equal signatures compute the same function: the
  same code (from a trusted module), defaults and closure values.
  """
  if depth > 8:
    return None
  if isinstance(fn, functools.partial):
    parts = (_signature(fn.func, depth + 1),
             _value_signature(fn.args, depth),
             _value_signature(sorted(fn.keywords.items()), depth))
    if parts[0] is None or _UNCACHEABLE in parts[1:]:
      return None
    return ('partial',) + parts
  if not isinstance(fn, types.FunctionType):
    return None
  module = getattr(fn, '__module__', None) or ''
  if not module.startswith(_TRUSTED_MODULES):
    return None
  cells = tuple(c.cell_contents for c in fn.__closure__ or ())
  parts = (_value_signature(cells, depth),
           _value_signature(fn.__defaults__ or (), depth),
           _value_signature(sorted((fn.__kwdefaults__ or {}).items()), depth))
  if _UNCACHEABLE in parts:
    return None
  return ('function', module, fn.__code__) + parts


_compiled: 'collections.OrderedDict[Any, Callable[..., Any]]' = (
    collections.OrderedDict())


def _compiled_initializer(initializer, shape) -> Optional[Callable[..., Any]]:
  """`jit((root, hashes) -> initializer(fold_chain(root, hashes), shape))`."""
  sig = _signature(initializer)
  if sig is None:
    return None
  try:
    cache_key = (sig, shape)
    fn = _compiled.get(cache_key)
  except TypeError:  # an unhashable shape
    return None
  if fn is None:
    fn = jax.jit(lambda root, hashes: initializer(_fold_chain(root, hashes),
                                                  shape),
                 compiler_options=_AS_EAGER)
    _compiled[cache_key] = fn
    if len(_compiled) > _MAX_CACHED:
      _compiled.popitem(last=False)
  else:
    _compiled.move_to_end(cache_key)
  return fn


def initialize(initializer: Callable[..., Any], key: Any, shape: Any) -> Any:
  """`initializer(key, shape)`, concrete whenever `key` is concrete.

  `key` is a traced key (the initializer is traced), a concrete key or a
  `LazyKey` (one compiled call for trusted initializers, else an eager call
  on the materialized key).
  """
  if is_tracer(key):
    return initializer(key, shape)
  if not isinstance(key, LazyKey):
    key = LazyKey(key, ())
  with jax.ensure_compile_time_eval():
    fn = _compiled_initializer(initializer, shape)
    if fn is not None:
      try:
        return fn(key.root, _hash_array(key.hashes))
      except Exception:  # pylint: disable=broad-except
        pass  # the eager call below raises the error users know, if any
    return initializer(materialize(key), shape)
