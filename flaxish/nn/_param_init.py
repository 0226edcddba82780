"""Parameter keys and initial values: one compiled call per parameter.

A parameter's key is its frame's key folded with the SHA-1 hashes of the
names on its path (`fold_in(fold_in(rng, h('Dense_0')), h('kernel'))`);
stateful frames also split their key once per state variable. With a
concrete rng, frames keep that derivation symbolic (`LazyKey`: the root key
and the steps so far) and compute nothing. A parameter is then made by ONE
jitted call `initializer(derive(root, steps), shape)`, compiled once per
(initializer, shape, steps pattern) and reused across `init` calls, instead
of one eager dispatch (and one XLA compile per shape) for every fold-in,
every split and every operation of the initializer. `zeros` and `ones`
(also as cast by the layers) need no key and no program: they are filled on
the host and transferred.

The values are bit-identical to the eager computation: key derivation is
integer arithmetic, the initializers are compiled without XLA's algebraic
simplifier (which reassociates floating-point products), and initializers
that compute in a float narrower than 32 bits stay eager (XLA drops rounding
round trips such as float32 -> bfloat16 -> float32). `tests/nn/
test_param_init.py` compares every library initializer with its eager value.
Initializer programs are compiled only when JAX's default backend is the
CPU: a GPU compiler contracts multiplies and adds into FMAs, which changes
the last bit of `normal` and friends (seen on an H100), so elsewhere the
initializers run eagerly on the compiled key.

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

__all__ = ['LazyKey', 'fold_in_name', 'materialize', 'split', 'cast',
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
# XLA:CPU spends most of such a compile in LLVM's optimizer: threefry on a
# small shape takes 0.5-0.7 s at the default level 3, 0.15-0.2 s at level 1,
# and runs as fast (these programs run once per parameter). Level 1 keeps the
# values (level 0 does not: it changes the last bits of the float arithmetic).
_CPU_FAST_COMPILE = {'xla_backend_optimization_level': 1}
_UNCACHEABLE = object()
# Steps of a key derivation other than a name hash: the two halves of split().
_SPLIT_HALVES = (-1, -2)


def _initializers_compile_exactly() -> bool:
  """Whether compiled initializers give the eager values bit for bit."""
  return jax.default_backend() == 'cpu'


def _compiler_options():
  if jax.default_backend() == 'cpu':
    return {**_AS_EAGER, **_CPU_FAST_COMPILE}
  return _AS_EAGER


class LazyKey:
  """The key `root` after `steps`, not computed.

  Attributes:
    root: a concrete PRNG key (raw uint32[2] or typed).
    steps: a tuple of uint32 name hashes (`fold_in`) and `-1` / `-2` (the
      first / second key of `split`), applied in order.
  """
  __slots__ = ('root', 'steps')

  def __init__(self, root: Any, steps: Tuple[int, ...]):
    self.root = root
    self.steps = steps

  def __repr__(self):
    return f'LazyKey(root={self.root!r}, steps={self.steps})'

  def program_args(self) -> Tuple[Any, np.ndarray, Tuple[int, ...]]:
    """`(root, hashes, pattern)`: the hashes as data, the rest static."""
    hashes = np.array([s for s in self.steps if s >= 0], dtype=np.uint32)
    pattern = tuple(0 if s >= 0 else s for s in self.steps)
    return self.root, hashes, pattern


def _lazy(rng: Any) -> LazyKey:
  return rng if isinstance(rng, LazyKey) else LazyKey(rng, ())


def fold_in_name(rng: Any, name: str) -> Any:
  """The key of child or parameter `name`: `fold_in(rng, sha1(name)[:4])`.

  Concrete keys give a `LazyKey` (no computation); traced keys a traced key.
  """
  h = hash_name(name)
  if is_tracer(rng):
    return jax.random.fold_in(rng, h)
  rng = _lazy(rng)
  return LazyKey(rng.root, rng.steps + (h,))


def split(rng: Any) -> Tuple[Any, Any]:
  """`jax.random.split(rng)` as a pair; concrete keys give `LazyKey`s."""
  if is_tracer(rng):
    return tuple(jax.random.split(rng))
  rng = _lazy(rng)
  return tuple(LazyKey(rng.root, rng.steps + (half,))
               for half in _SPLIT_HALVES)


def _derive(root, hashes, pattern):
  """Applies `pattern` (0: fold in the next hash, -1/-2: a split half)."""
  key, i = root, 0
  for step in pattern:
    if step == 0:
      key = jax.random.fold_in(key, hashes[i])
      i += 1
    else:
      key = jax.random.split(key)[-1 - step]
  return key


@functools.lru_cache(maxsize=None)
def _materializer() -> Callable[..., Any]:
  # Made on first use: choosing the options starts JAX's backend.
  return jax.jit(_derive, static_argnums=2,
                 compiler_options=_compiler_options())


def materialize(rng: Any) -> Any:
  """The key a `LazyKey` stands for (other keys are returned as they are)."""
  if not isinstance(rng, LazyKey):
    return rng
  with jax.ensure_compile_time_eval():
    return _materializer()(*rng.program_args())


def cast(initializer: Callable[..., Any], dtype: Any) -> Callable[..., Any]:
  """`initializer` whose value is converted to `dtype`."""
  return functools.partial(_cast_value, initializer, jnp.dtype(dtype))


def _cast_value(initializer, dtype, key, shape):
  return jnp.asarray(initializer(key, shape), dtype)


def _fill(initializer: Callable[..., Any], shape: Any) -> Optional[np.ndarray]:
  """The value of `zeros` / `ones` (possibly `cast`) on the host, else None."""
  dtype = None
  if (isinstance(initializer, functools.partial) and
      initializer.func is _cast_value and not initializer.keywords):
    initializer, dtype = initializer.args
  if initializer is jax.nn.initializers.zeros:
    value = 0
  elif initializer is jax.nn.initializers.ones:
    value = 1
  else:
    return None
  if dtype is None:  # the initializers' default: float32, float64 with x64
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
  try:
    return np.full(shape, value, dtype)
  except (TypeError, ValueError):
    return None  # a bad shape: the initializer raises the usual error


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
  """`jit((root, hashes, pattern) -> initializer(derive(...), shape))`."""
  sig = _signature(initializer)
  if sig is None:
    return None
  try:
    cache_key = (sig, shape)
    fn = _compiled.get(cache_key)
  except TypeError:  # an unhashable shape
    return None
  if fn is None:
    fn = jax.jit(lambda root, hashes, pattern: initializer(
        _derive(root, hashes, pattern), shape), static_argnums=2,
                 compiler_options=_compiler_options())
    _compiled[cache_key] = fn
    if len(_compiled) > _MAX_CACHED:
      _compiled.popitem(last=False)
  else:
    _compiled.move_to_end(cache_key)
  return fn


def initialize(initializer: Callable[..., Any], key: Any, shape: Any) -> Any:
  """`initializer(key, shape)`, concrete whenever `key` is concrete.

  `key` is a traced key (the initializer is traced), a concrete key or a
  `LazyKey` (zeros / ones: filled on the host; other trusted initializers:
  one compiled call; the rest: an eager call on the materialized key).
  """
  if is_tracer(key):
    return initializer(key, shape)
  key = _lazy(key)
  with jax.ensure_compile_time_eval():
    filled = _fill(initializer, shape)
    if filled is not None:
      return jnp.asarray(filled)
    fn = (_compiled_initializer(initializer, shape)
          if _initializers_compile_exactly() else None)
    if fn is not None:
      try:
        return fn(*key.program_args())
      except Exception:  # pylint: disable=broad-except
        pass  # the eager call below raises the error users know, if any
    return initializer(materialize(key), shape)
