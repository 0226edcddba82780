"""Tests for getting array leaves to host memory (serialization.host)."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flaxish.serialization import host


def test_to_numpy():
  arr = np.arange(3)
  assert host.to_numpy(arr) is arr
  assert host.to_numpy(arr, copy=True) is not arr
  scalar = host.to_numpy(np.float32(2))
  assert isinstance(scalar, np.ndarray) and scalar.shape == ()
  np.testing.assert_array_equal(host.to_numpy(jnp.arange(4)), np.arange(4))
  keys = jax.random.split(jax.random.key(0), 3)
  np.testing.assert_array_equal(host.to_numpy(keys),
                                jax.random.key_data(keys))


def test_sharded_arrays_are_gathered():
  mesh = Mesh(np.array(jax.devices()[:4]), ('d',))
  x = jax.device_put(jnp.arange(8.0), NamedSharding(mesh, PartitionSpec('d')))
  np.testing.assert_array_equal(host.to_numpy(x), np.arange(8.0))
  replicated = jax.device_put(jnp.ones(3), NamedSharding(mesh,
                                                         PartitionSpec()))
  np.testing.assert_array_equal(host.to_numpy(replicated), np.ones(3))


def test_copy_leaves_to_host():
  source = np.arange(3.0)
  tree = {'a': [source, (jnp.ones(2), 'x')], 'b': np.float32(1), 'c': None}
  copied = host.copy_leaves_to_host(tree)
  assert isinstance(copied['a'], list) and isinstance(copied['a'][1], tuple)
  assert copied['a'][0] is not source
  assert not np.shares_memory(copied['a'][0], source)
  assert isinstance(copied['a'][1][0], np.ndarray)
  assert copied['a'][1][1] == 'x' and copied['c'] is None
  assert copied['b'] is tree['b']  # NumPy scalars are immutable: kept
  source[0] = 5
  assert copied['a'][0][0] == 0
