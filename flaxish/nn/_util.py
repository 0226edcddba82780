"""Private helpers of flaxish.nn: call stacks, name hashing, the JAX trace
checks that keep rng scopes and mutable state inside the transformation that
created them, and the layers' argument checks. `nn.utils` keeps the 2020
public names."""
import contextlib
import hashlib
import threading
from typing import (Any, Callable, Generic, Iterator, List, Optional,
                    Sequence, Tuple, TypeVar)

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['CallStack', 'classproperty', 'hash_name', 'trace_state',
           'is_tracer', 'init_dtype', 'param', 'as_tuple', 'normalize_axes',
           'spatial_tuple', 'check_padding']

_T = TypeVar('_T')

try:  # public since jax 0.4.36; absent in some future JAX: checks turn off.
  from jax.extend.core import get_opaque_trace_state as _get_trace_state
except ImportError:  # pragma: no cover
  _get_trace_state = None


def trace_state() -> Any:
  """An opaque token of the current JAX trace (jit/vmap/grad nesting).

  Two tokens compare equal iff taken under the same transformation. Returns
  None when JAX offers no public way to tell (the checks are then skipped).
  """
  if _get_trace_state is None:
    return None
  return _get_trace_state(convention='flax')


def is_tracer(x: Any) -> bool:
  """True if `x` is a JAX tracer (an abstract value inside a transform)."""
  return isinstance(x, jax.core.Tracer)


def hash_name(name: str) -> int:
  """The first 4 bytes (big-endian) of the SHA-1 of the UTF-8 name."""
  return int.from_bytes(hashlib.sha1(name.encode('utf-8')).digest()[:4],
                        'big')


class CallStack(Generic[_T]):
  """A thread-local stack of values with a `scope(value)` context manager."""

  def __init__(self):
    self._local = threading.local()

  @property
  def _stack(self) -> List[_T]:
    stack = getattr(self._local, 'stack', None)
    if stack is None:
      stack = self._local.stack = []
    return stack

  @contextlib.contextmanager
  def scope(self, value: _T) -> Iterator[_T]:
    """Pushes `value` for the duration of the block and yields it."""
    stack = self._stack
    stack.append(value)
    try:
      yield value
    finally:
      stack.pop()

  def frame(self, data: Any = None):
    """The 2020 name of `scope`; `data` defaults to a new dict."""
    return self.scope({} if data is None else data)

  def __iter__(self):
    return iter(list(self._stack))

  def __len__(self) -> int:
    return len(self._stack)

  def __bool__(self) -> bool:
    return bool(self._stack)

  def __getitem__(self, index):
    return self._stack[index]

  def top(self) -> Optional[_T]:
    stack = self._stack
    return stack[-1] if stack else None


class classproperty:  # pylint: disable=invalid-name
  """A read-only property computed on the class: `f(cls)`."""

  def __init__(self, f):
    self.fget = f
    self.__doc__ = getattr(f, '__doc__', None)

  def __get__(self, instance, owner):
    return self.fget(owner)


# ---- layers: parameter dtypes and argument checks ---------------------------

Initializer = Callable[..., Any]


def init_dtype(param_dtype: Any) -> Any:
  """The dtype initializers compute in: `param_dtype`, at least float32.

  Initializers draw in float32 (or wider) and the result is then cast to
  `param_dtype`, so bf16/fp16 storage gets the same values rounded, and
  initializers that need float32 (e.g. `orthogonal`'s QR) keep working.
  """
  return jnp.promote_types(param_dtype, jnp.float32)


def param(module, name: str, shape: Sequence[int], initializer: Initializer,
          param_dtype: Any) -> Any:
  """`module.param` whose new value is stored as `param_dtype`."""
  return module.param(
      name, tuple(shape),
      lambda key, shape: jnp.asarray(initializer(key, shape), param_dtype))


def as_tuple(x: Any) -> Tuple[Any, ...]:
  """An int (or other scalar) becomes a 1-tuple; a sequence becomes a tuple."""
  if isinstance(x, (int, np.integer)):
    return (int(x),)
  return tuple(x)


def normalize_axes(axes: Sequence[int], ndim: int, where: str,
                   what: str = 'axis') -> Tuple[int, ...]:
  """Makes axes non-negative; raises a ValueError naming `where` if invalid."""
  out = []
  for ax in axes:
    if not isinstance(ax, (int, np.integer)) or not -ndim <= ax < ndim:
      raise ValueError(f'{where}: {what} {tuple(axes)} is out of range for an '
                       f'input of rank {ndim}')
    out.append(int(ax) % ndim)
  if len(set(out)) != len(out):
    raise ValueError(f'{where}: {what} {tuple(axes)} has repeated axes')
  return tuple(out)


def spatial_tuple(value: Any, n: int, name: str, where: str,
                  default: int = 1) -> Tuple[int, ...]:
  """None -> `(default,) * n`; int -> `(value,) * n`; else a length-n tuple."""
  if value is None:
    return (default,) * n
  if isinstance(value, (int, np.integer)):
    return (int(value),) * n
  value = tuple(value)
  if len(value) != n:
    raise ValueError(f'{where}: {name}={value} must have one entry per '
                     f'spatial dimension ({n})')
  return value


def check_padding(padding: Any, n: int, where: str) -> Any:
  """Checks a padding argument: 'SAME', 'VALID' or n `(low, high)` pairs."""
  if isinstance(padding, str):
    if padding.upper() not in ('SAME', 'VALID', 'SAME_LOWER'):
      raise ValueError(f"{where}: padding must be 'SAME', 'VALID' or a "
                       f'sequence of {n} (low, high) pairs, got {padding!r}')
    return padding.upper()
  try:
    pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: padding must be 'SAME', 'VALID' or a "
                     f'sequence of {n} (low, high) pairs, got {padding!r}'
                     ) from None
  if len(pairs) != n:
    raise ValueError(f'{where}: padding {padding!r} has {len(pairs)} (low, '
                     f'high) pairs but the input has {n} spatial dimensions')
  return pairs
