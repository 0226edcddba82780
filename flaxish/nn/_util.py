"""Private helpers of the Module system: call stacks, name hashing, and the
JAX trace checks that keep rng scopes and mutable state inside the
transformation that created them. `nn.utils` keeps the 2020 public names."""
import contextlib
import hashlib
import threading
from typing import Any, Generic, Iterator, List, Optional, TypeVar

import jax

__all__ = ['CallStack', 'classproperty', 'hash_name', 'trace_state',
           'is_tracer']

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
