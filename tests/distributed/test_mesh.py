"""data_parallel_mesh and its shardings, on 8 fake CPU devices."""
import jax
from jax.sharding import Mesh, PartitionSpec
import numpy as np
import pytest

from flaxish import distributed


def test_mesh_over_all_devices():
  mesh = distributed.data_parallel_mesh()
  assert mesh.axis_names == ('data',)
  assert list(mesh.devices) == jax.devices()
  assert distributed.batch_sharding(mesh).spec == PartitionSpec('data')
  assert distributed.replicated_sharding(mesh).spec == PartitionSpec()


def test_devices_are_grouped_by_process():
  devices = jax.devices()[::-1]
  mesh = distributed.data_parallel_mesh('batch', devices=devices)
  # One process here: JAX's order within the process is kept.
  assert list(mesh.devices) == devices
  assert mesh.axis_names == ('batch',)
  assert [d.process_index for d in mesh.devices] == sorted(
      d.process_index for d in devices)


@pytest.mark.parametrize('kwargs, error, message', [
    ({'devices': []}, ValueError, 'empty list of devices'),
    ({'devices': [jax.devices()[0]] * 2}, ValueError, 'devices repeat'),
    ({'axis_name': ''}, TypeError, 'axis_name must be a non-empty str'),
])
def test_mesh_errors(kwargs, error, message):
  with pytest.raises(error, match=message):
    distributed.data_parallel_mesh(**kwargs)


def test_data_axis_of_a_2d_mesh():
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'model'))
  with pytest.raises(ValueError, match=r"the mesh has axes \('data', "
                     r"'model'\): pass axis_name="):
    distributed.batch_sharding(mesh)
  assert distributed.batch_sharding(mesh, 'data').spec == PartitionSpec(
      'data')
  with pytest.raises(ValueError, match="axis_name='x' is not an axis of the "
                     r"mesh \(its axes: \('data', 'model'\)\)"):
    distributed.data_axis(mesh, 'x')
