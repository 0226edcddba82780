"""global_batch, shard_on_mesh, replicate_on_mesh and process_slice on one
process with 8 fake CPU devices (test_multiprocess covers two processes)."""
import re

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec
import numpy as np
import pytest

from flaxish import distributed
from flaxish import optim


@pytest.fixture
def mesh():
  return distributed.data_parallel_mesh()


def _batch(n=16):
  rng = np.random.RandomState(0)
  return {'image': rng.randn(n, 3, 2).astype(np.float32),
          'label': rng.randint(0, 10, n)}  # int64 on the host


@pytest.mark.parametrize('fn', [distributed.global_batch,
                                distributed.shard_on_mesh])
def test_batch_is_split_over_the_devices(mesh, fn):
  host = _batch()
  batch = fn(host, mesh)
  assert batch['image'].shape == (16, 3, 2)
  assert batch['label'].dtype == jnp.int32  # JAX's dtype, as jnp.asarray
  for name in host:
    assert batch[name].sharding == distributed.batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(batch[name]), host[name])
  shards = sorted(batch['image'].addressable_shards,
                  key=lambda s: s.index[0].start)
  assert [s.data.shape[0] for s in shards] == [2] * 8
  assert [s.device for s in shards] == list(mesh.devices)


def test_global_batch_on_a_2d_mesh():
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'model'))
  batch = distributed.global_batch(_batch(8), mesh, axis_name='data')
  assert batch['image'].sharding.spec == PartitionSpec('data')
  np.testing.assert_array_equal(np.asarray(batch['image']),
                                _batch(8)['image'])


def test_global_batch_errors(mesh):
  with pytest.raises(ValueError, match=re.escape(
      "global_batch: ['label'] has shape (12,), but its leading (batch) axis "
      'must be a multiple of the 8 devices of this process along mesh axis '
      "'data'; use a per-process batch size that is a multiple of 8 (a "
      'global batch size that is a multiple of 8)')):
    distributed.global_batch({'label': np.zeros(12)}, mesh)
  with pytest.raises(ValueError, match=re.escape('the input has shape ()')):
    distributed.global_batch(np.float32(1), mesh)
  with pytest.raises(ValueError, match=re.escape(
      "shard_on_mesh: ['x'] has shape (4, 2), but its leading axis must be a "
      "multiple of the 8 devices of mesh axis 'data'")):
    distributed.shard_on_mesh({'x': np.zeros((4, 2))}, mesh)


def test_replicate_an_optimizer(mesh):
  params = {'w': np.arange(6, dtype=np.float32).reshape(2, 3),
            'b': np.zeros(3, np.float64)}
  optimizer = optim.Momentum(learning_rate=0.1).create(params)
  out = distributed.replicate_on_mesh(optimizer, mesh)
  assert isinstance(out, optim.Optimizer)
  replicated = distributed.replicated_sharding(mesh)
  for before, after in zip(jax.tree_util.tree_leaves(optimizer),
                           jax.tree_util.tree_leaves(out)):
    assert after.sharding == replicated
    assert after.shape == np.shape(before)
    assert after.dtype == jax.dtypes.canonicalize_dtype(np.asarray(
        before).dtype)
    np.testing.assert_array_equal(np.asarray(after), np.asarray(before))
  assert out.target['b'].dtype == jnp.float32  # no float64 without x64


def test_replicate_keeps_placed_arrays_and_moves_others(mesh):
  placed = distributed.replicate_on_mesh(jnp.arange(4.), mesh)
  assert distributed.replicate_on_mesh(placed, mesh) is placed
  split = distributed.shard_on_mesh(np.arange(16.), mesh)
  moved = distributed.replicate_on_mesh({'a': split, 'n': 3, 'f': 0.5}, mesh)
  assert moved['a'].sharding == distributed.replicated_sharding(mesh)
  np.testing.assert_array_equal(np.asarray(moved['a']), np.arange(16.))
  assert moved['n'].dtype == jnp.int32 and int(moved['n']) == 3
  assert moved['f'].dtype == jnp.float32


def test_replicate_typed_keys(mesh):
  key = jax.random.key(3)
  out = distributed.replicate_on_mesh({'rng': key}, mesh)['rng']
  assert jax.dtypes.issubdtype(out.dtype, jax.dtypes.prng_key)
  assert out.sharding == distributed.replicated_sharding(mesh)
  np.testing.assert_array_equal(jax.random.key_data(out),
                                jax.random.key_data(key))


def test_replicate_errors(mesh):
  optimizer = optim.GradientDescent(0.1).create({'w': np.zeros(2)})
  with pytest.raises(ValueError, match=re.escape(
      'replicate_on_mesh: this optimizer was replicated for pmap '
      '(optimizer.replicate()); its leaves have a leading device axis. Pass '
      'the unreplicated optimizer (optimizer.unreplicate()).')):
    distributed.replicate_on_mesh({'opt': optimizer.replicate()}, mesh)
  with pytest.raises(TypeError, match=re.escape(
      "replicate_on_mesh: the leaf at ['name'] is a str, not an array")):
    distributed.replicate_on_mesh({'name': 'x'}, mesh)


def test_process_slice():
  assert distributed.process_slice(16) == slice(0, 16)  # one process
  assert distributed.process_slice(16, 0, 2) == slice(0, 8)
  assert distributed.process_slice(16, 1, 2) == slice(8, 16)
  with pytest.raises(ValueError, match='the global batch size 15 is not a '
                     'multiple of the 2 processes'):
    distributed.process_slice(15, 0, 2)
  with pytest.raises(ValueError, match=re.escape(
      'process_index=2 is not in [0, 2)')):
    distributed.process_slice(16, 2, 2)


def test_a_jitted_step_keeps_the_shardings(mesh):
  replicated = distributed.replicated_sharding(mesh)
  w = distributed.replicate_on_mesh(np.ones((3, 2), np.float32), mesh)
  x = distributed.global_batch(np.ones((16, 3), np.float32), mesh)
  step = jax.jit(lambda w, x: w - 0.1 * jax.grad(
      lambda w: jnp.mean((x @ w) ** 2))(w), out_shardings=replicated)
  out = step(w, x)
  assert out.sharding == replicated
  # d/dw mean((x @ w)**2) = 2 * 3 / 2 = 3 per entry (x @ w = 3, 2 columns).
  np.testing.assert_allclose(np.asarray(out), 1 - 0.1 * 3, rtol=1e-6)
