"""Array leaves to host memory, one leaf at a time.

`to_numpy` turns one leaf (`np.ndarray`, NumPy scalar, `jax.Array`) into a
NumPy array. A `jax.Array` spread over several processes is read from this
process's copy when it is fully replicated, and gathered with
`multihost_utils.process_allgather` otherwise: that gather is a collective,
so then every process must make the same call (for instance every process
calls `save_checkpoint`; only process 0 writes). Typed PRNG key arrays
(`jax.random.key`) are stored as their raw `uint32` key data.
"""
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

__all__ = ['is_array', 'is_key_array', 'to_numpy', 'copy_leaves_to_host']


def is_array(x: Any) -> bool:
  """Whether `x` is an array leaf (NumPy array or scalar, or `jax.Array`)."""
  return isinstance(x, (np.ndarray, np.generic, jax.Array))


def is_key_array(x: Any) -> bool:
  """Whether `x` (an array or `ShapeDtypeStruct`) holds typed PRNG keys."""
  dtype = getattr(x, 'dtype', None)
  return dtype is not None and jax.dtypes.issubdtype(dtype,
                                                     jax.dtypes.prng_key)


def to_numpy(x: Any, copy: bool = False) -> np.ndarray:
  """`x` as a NumPy array on the host.

  Arguments:
    x: an array leaf (see `is_array`).
    copy: always return a fresh copy (default: share memory when possible,
      e.g. a NumPy input or a `jax.Array` on the CPU is not copied).
  """
  if isinstance(x, np.generic):
    return np.array(x)
  if isinstance(x, jax.Array):
    if is_key_array(x):
      x = jax.random.key_data(x)
    if not x.is_fully_addressable:
      if x.is_fully_replicated:
        x = x.addressable_data(0)
      else:
        x = multihost_utils.process_allgather(x, tiled=True)
  return np.array(x, copy=True) if copy else np.asarray(x)


def copy_leaves_to_host(tree: Any) -> Any:
  """A copy of a nested dict/list/tuple with every array leaf copied to host.

  All device-to-host transfers are started before the first one is waited
  for. Other leaves (Python scalars, strings, None) are kept as they are.
  """
  def start(x):
    if isinstance(x, jax.Array) and x.is_fully_addressable:
      try:
        x.copy_to_host_async()
      except Exception:  # pylint: disable=broad-except
        pass  # only an optimization (e.g. key arrays do not support it)
    return x

  def visit(x, fn):
    if type(x) is dict:  # pylint: disable=unidiomatic-typecheck
      return {k: visit(v, fn) for k, v in x.items()}
    if type(x) in (list, tuple):  # pylint: disable=unidiomatic-typecheck
      return type(x)(visit(v, fn) for v in x)
    if isinstance(x, (np.ndarray, jax.Array)):
      return fn(x)
    return x  # NumPy scalars are immutable: kept as they are

  visit(tree, start)
  return visit(tree, lambda x: to_numpy(x, copy=True))
