"""A data-parallel `Mesh` over every device of every process, and its two
shardings: the batch split along the mesh axis (`P('data')`), or replicated
(`P()`)."""
from typing import Any, Optional, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

__all__ = ['data_parallel_mesh', 'batch_sharding', 'replicated_sharding',
           'data_axis']


def data_parallel_mesh(axis_name: str = 'data',
                       devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D `Mesh` named `axis_name` (default 'data') over `devices` (default
  `jax.devices()`), grouped by process in order: a global batch is the
  processes' local batches, process 0's rows first."""
  if not isinstance(axis_name, str) or not axis_name:
    raise TypeError(f'data_parallel_mesh: axis_name must be a non-empty str, '
                    f'got {axis_name!r}')
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError('data_parallel_mesh: got an empty list of devices')
  if len(set(devices)) != len(devices):
    raise ValueError(f'data_parallel_mesh: devices repeat in {devices}')
  # A stable sort keeps JAX's order within each process.
  devices.sort(key=lambda d: d.process_index)
  return Mesh(np.array(devices, dtype=object), (axis_name,))


def data_axis(mesh: Mesh, axis_name: Optional[str] = None) -> str:
  """The mesh axis the batch is split over: `axis_name`, or the only one."""
  if axis_name is None:
    if len(mesh.axis_names) != 1:
      raise ValueError(
          f'the mesh has axes {tuple(mesh.axis_names)}: pass axis_name= to '
          'say which one splits the batch')
    return mesh.axis_names[0]
  if axis_name not in mesh.axis_names:
    raise ValueError(f'axis_name={axis_name!r} is not an axis of the mesh '
                     f'(its axes: {tuple(mesh.axis_names)})')
  return axis_name


def batch_sharding(mesh: Mesh,
                   axis_name: Optional[str] = None) -> NamedSharding:
  """Splits an array's leading (batch) axis along the mesh's data axis."""
  return NamedSharding(mesh, PartitionSpec(data_axis(mesh, axis_name)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """One full copy of an array on every device of the mesh."""
  return NamedSharding(mesh, PartitionSpec())
