"""Helpers for data-parallel training loops: sharding batches and keys,
one-hot labels, stacking metrics."""
from typing import Any, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxish import traverse_util

__all__ = ['shard', 'shard_prng_key', 'onehot', 'stack_forest',
           'get_metrics']


def shard(xs: Any) -> Any:
  """Splits every leaf's batch axis across the local devices.

  Arguments:
    xs: a pytree of arrays with a leading batch axis of size `B`.

  Returns:
    The same pytree with leaves of shape `(n_devices, B // n_devices, ...)`.

  Raises:
    ValueError: if `B` is not a multiple of `jax.local_device_count()`.
  """
  n = jax.local_device_count()

  def split(path, x):
    shape = np.shape(x)
    if not shape or shape[0] % n:
      where = traverse_util.path_str(path) if path else 'the input'
      raise ValueError(
          f'shard: the batch dimension of {where} (shape {shape}) is not '
          f'divisible by the {n} local devices; use a batch size that is a '
          f'multiple of {n} (drop or pad the last batch)')
    return x.reshape((n, shape[0] // n) + shape[1:])

  return jax.tree_util.tree_map_with_path(split, xs)


def shard_prng_key(prng_key: Any) -> Any:
  """Splits one PRNG key into one key per local device (leading axis)."""
  return jax.random.split(prng_key, jax.local_device_count())


def onehot(labels: Any, num_classes: int, on_value: float = 1.0,
           off_value: float = 0.0) -> jnp.ndarray:
  """One-hot encodes integer `labels` (any shape) into float32 `(..., C)`."""
  labels = jnp.asarray(labels)
  hit = labels[..., None] == jnp.arange(num_classes)
  return lax.select(hit, jnp.full(hit.shape, on_value, jnp.float32),
                    jnp.full(hit.shape, off_value, jnp.float32))


def stack_forest(forest: Sequence[Any]) -> Any:
  """Stacks a list of pytrees of the same structure into one (NumPy) pytree
  whose leaves have a new leading axis."""
  if not forest:
    raise ValueError('stack_forest: got an empty list of pytrees')
  return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *forest)


def get_metrics(device_metrics: Sequence[Any]) -> Any:
  """Takes device 0's copy of each step's (replicated) metrics, copies them
  to the host and stacks them: leaves of shape `(steps, ...)`."""
  host = jax.device_get(list(device_metrics))
  return stack_forest(jax.tree_util.tree_map(lambda x: x[0], host))
