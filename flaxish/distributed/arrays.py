"""Host data to global `jax.Array`s on a `Mesh`, for `jit` data parallelism."""
from typing import Any, Optional

import jax
from jax.sharding import Mesh
import numpy as np

from flaxish.distributed import mesh as mesh_lib

__all__ = ['global_batch', 'shard_on_mesh', 'replicate_on_mesh',
           'process_slice']


def _where(path) -> str:
  return jax.tree_util.keystr(path) or 'the input'


def _host_array(x: Any) -> np.ndarray:
  """`x` as a NumPy array of the dtype JAX would give it (no float64 unless
  x64 is on)."""
  x = np.asarray(x)
  return x.astype(jax.dtypes.canonicalize_dtype(x.dtype), copy=False)


def _local_positions(mesh: Mesh, axis: str) -> int:
  """How many positions along `axis` this process's devices cover."""
  me = jax.process_index()
  pos = mesh.axis_names.index(axis)
  local = {index[pos] for index, d in np.ndenumerate(mesh.devices)
           if d.process_index == me}
  if not local:
    raise ValueError(f'process {me} has no device in the mesh; build it over '
                     'every process\'s devices (data_parallel_mesh())')
  if mesh.shape[axis] % len(local):
    raise ValueError(f'the processes own unequal parts of mesh axis '
                     f'{axis!r} (this one: {len(local)} of '
                     f'{mesh.shape[axis]} positions)')
  return len(local)


def global_batch(local_batch: Any, mesh: Mesh,
                 axis_name: Optional[str] = None) -> Any:
  """Assembles the processes' local batches into one global batch.

  Every process passes its own rows, the same number everywhere: a pytree of
  host arrays `[b, ...]`, `b` a multiple of its devices along the data axis
  (`axis_name`, default the mesh's only axis). Returns global arrays `[b *
  P, ...]` (`P` processes, in process order) with sharding
  `NamedSharding(mesh, P(axis_name))`.
  """
  axis = mesh_lib.data_axis(mesh, axis_name)
  sharding = mesh_lib.batch_sharding(mesh, axis)
  n_local = _local_positions(mesh, axis)
  scale = mesh.shape[axis] // n_local

  def make(path, x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      raise ValueError(f'global_batch: {_where(path)} is already a global '
                       'array; pass each process\'s host rows')
    x = _host_array(x)
    if x.ndim == 0 or x.shape[0] % n_local:
      raise ValueError(
          f'global_batch: {_where(path)} has shape {x.shape}, but its '
          f'leading (batch) axis must be a multiple of the {n_local} devices '
          f'of this process along mesh axis {axis!r}; use a per-process '
          f'batch size that is a multiple of {n_local} (a global batch size '
          f'that is a multiple of {mesh.shape[axis]})')
    global_shape = (x.shape[0] * scale,) + x.shape[1:]
    return jax.make_array_from_process_local_data(sharding, x, global_shape)

  return jax.tree_util.tree_map_with_path(make, local_batch)


def shard_on_mesh(tree: Any, mesh: Mesh,
                  axis_name: Optional[str] = None) -> Any:
  """Splits whole arrays `[B, ...]`, the same on every process, along the
  data axis (`B` a multiple of its size): each device keeps its rows. Returns
  global arrays with sharding `NamedSharding(mesh, P(axis_name))`."""
  axis = mesh_lib.data_axis(mesh, axis_name)
  sharding = mesh_lib.batch_sharding(mesh, axis)
  n = mesh.shape[axis]

  def make(path, x):
    x = _host_array(x)
    if x.ndim == 0 or x.shape[0] % n:
      raise ValueError(
          f'shard_on_mesh: {_where(path)} has shape {x.shape}, but its '
          f'leading axis must be a multiple of the {n} devices of mesh axis '
          f'{axis!r}')
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  return jax.tree_util.tree_map_with_path(make, tree)


def _is_pmap_replicated(x: Any) -> bool:
  is_replicated = getattr(x, 'is_replicated', None)
  return callable(is_replicated) and bool(is_replicated())


def replicate_on_mesh(tree: Any, mesh: Mesh) -> Any:
  """Places one copy of every leaf on every device of the mesh.

  For params, models and optimizers that are not `replicate()`d; every
  process must pass the same values. Returns global arrays of the same
  shapes with sharding `NamedSharding(mesh, P())`; leaves already placed so
  are kept, typed PRNG keys stay keys.
  """
  sharding = mesh_lib.replicated_sharding(mesh)
  for node in jax.tree_util.tree_leaves(tree, is_leaf=_is_pmap_replicated):
    if _is_pmap_replicated(node):
      raise ValueError(
          'replicate_on_mesh: this optimizer was replicated for pmap '
          '(optimizer.replicate()); its leaves have a leading device axis. '
          'Pass the unreplicated optimizer (optimizer.unreplicate()).')

  def put(path, x):
    if isinstance(x, jax.Array):
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = put(path, jax.random.key_data(x))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
      if x.sharding.is_equivalent_to(sharding, x.ndim):
        return x
      if not x.is_fully_addressable:
        # Already global (e.g. sharded over another mesh): let XLA move it.
        return jax.jit(lambda a: a, out_shardings=sharding)(x)
    elif not isinstance(x, (np.ndarray, np.generic, bool, int, float,
                            complex)):
      raise TypeError(f'replicate_on_mesh: the leaf at {_where(path)} is a '
                      f'{type(x).__name__}, not an array')
    x = _host_array(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

  return jax.tree_util.tree_map_with_path(put, tree)


def process_index_count(caller: str, index: Optional[int],
                        count: Optional[int]):
  """`(index, count)`, by default this process's, checked."""
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  if not 0 <= index < count:
    raise ValueError(f'{caller}: process_index={index} is not in '
                     f'[0, {count})')
  return index, count


def process_slice(global_size: int, process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> slice:
  """The rows of a global batch of `global_size` that this process feeds:
  `slice(p * global_size // P, (p + 1) * global_size // P)` for process `p`
  (default `jax.process_index()`) of `P` (default `jax.process_count()`)."""
  index, count = process_index_count('process_slice', process_index,
                                     process_count)
  if global_size % count:
    raise ValueError(f'process_slice: the global batch size {global_size} is '
                     f'not a multiple of the {count} processes; use a '
                     f'multiple of {count}')
  size = global_size // count
  return slice(index * size, (index + 1) * size)
