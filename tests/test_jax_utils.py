"""Tests for flaxish.jax_utils (8 fake CPU devices, see conftest.py)."""
import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import NamedSharding
import numpy as np
import pytest

from flaxish import jax_utils


def test_replicate_stacks_one_copy_per_device():
  devices = jax.local_devices()
  n = len(devices)
  assert n == 8
  tree = {'w': jnp.arange(6.).reshape(2, 3), 'n': np.int32(5)}
  rep = jax_utils.replicate(tree)
  assert rep['w'].shape == (n, 2, 3) and rep['n'].shape == (n,)
  assert isinstance(rep['w'].sharding, NamedSharding)
  for i, shard in enumerate(rep['w'].addressable_shards):
    assert shard.device == devices[i]
    np.testing.assert_array_equal(shard.data[0], tree['w'])
  np.testing.assert_array_equal(rep['n'], np.full((n,), 5))


def test_replicate_feeds_pmap_and_unreplicate_takes_device_0():
  rep = jax_utils.replicate({'x': jnp.ones(3)})
  out = jax.pmap(lambda t: t['x'] * lax.axis_index('i'), axis_name='i')(rep)
  np.testing.assert_array_equal(np.asarray(out)[:, 0], np.arange(8))
  first = jax_utils.unreplicate({'y': out})['y']
  np.testing.assert_array_equal(first, np.zeros(3))
  assert first.devices() == {jax.local_devices()[0]}


def test_replicate_on_a_subset_of_devices():
  devices = jax.local_devices()[:2]
  rep = jax_utils.replicate(jnp.ones((4,)), devices=devices)
  assert rep.shape == (2, 4)
  assert rep.sharding.device_set == set(devices)


EMPTY_DEVICES = (r'replicate: got an empty list of devices \(\[\]\); pass '
                 r'devices=None to use every local device '
                 r'\(jax.local_devices\(\)\), or a non-empty list')


def test_replicate_on_no_devices_is_a_clear_error():
  for tree in ({'w': np.ones(3)}, {}):
    with pytest.raises(ValueError, match=EMPTY_DEVICES):
      jax_utils.replicate(tree, devices=[])
  with pytest.raises(ValueError, match=EMPTY_DEVICES):
    jax_utils.replicate_leaves({'w': np.ones(3)}, [])


def test_pmean_is_deprecated_but_works():
  x = jnp.arange(8.)
  with pytest.warns(DeprecationWarning, match='use jax.lax.pmean'):
    out = jax.pmap(lambda v: jax_utils.pmean(v, 'i'), axis_name='i')(x)
  np.testing.assert_allclose(out, np.full(8, 3.5))


def test_prefetch_to_device():
  batches = [{'x': np.full((8, 2), i, np.float32)} for i in range(5)]
  out = list(jax_utils.prefetch_to_device(iter(batches), size=2))
  assert len(out) == 5
  for i, b in enumerate(out):
    assert isinstance(b['x'], jax.Array)
    assert len(b['x'].sharding.device_set) == 8
    np.testing.assert_array_equal(b['x'], batches[i]['x'])
  total = jax.pmap(lambda b: b['x'].sum())(out[3])
  np.testing.assert_allclose(total, np.full(8, 6.))


def test_prefetch_to_device_rejects_unsharded_batch():
  it = jax_utils.prefetch_to_device(iter([{'x': np.zeros((16, 2))}]), 1)
  with pytest.raises(ValueError, match=r'leaf /x has shape \(16, 2\) '
                     'but its leading axis must be the number of devices '
                     r'\(8\); reshape each batch with common_utils.shard'):
    next(it)


def _np_cumsum_scan(xs, axes):
  """Reference: visit positions in row-major order over `axes`."""
  moved = np.moveaxis(xs, axes, tuple(range(len(axes))))
  flat = moved.reshape((-1,) + moved.shape[len(axes):])
  carry = np.zeros(flat.shape[1:], xs.dtype)
  ys = []
  for x in flat:
    carry = carry + x
    ys.append(carry.copy())
  ys = np.stack(ys).reshape(moved.shape)
  return carry, np.moveaxis(ys, tuple(range(len(axes))), axes)


@pytest.mark.parametrize('axis', [0, 1, -1, (0, 2), (2, 0)])
def test_scan_in_dim_matches_loop(axis):
  xs = np.random.RandomState(0).randn(2, 3, 4).astype(np.float32)
  axes = (axis,) if isinstance(axis, int) else axis
  axes = tuple(a % 3 for a in axes)
  rest_shape = tuple(s for i, s in enumerate(xs.shape) if i not in axes)
  body = lambda c, x: (c + x, c + x)
  c, ys = jax_utils.scan_in_dim(body, jnp.zeros(rest_shape), xs, axis=axis)
  ref_c, ref_ys = _np_cumsum_scan(xs, axes)
  np.testing.assert_allclose(c, ref_c, rtol=1e-6)
  np.testing.assert_allclose(ys, ref_ys, rtol=1e-6)


def test_scan_in_dim_keepdims():
  xs = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  seen = []

  def body(c, x):
    seen.append(x.shape)
    return c + x.sum(), x * 2

  c, ys = jax_utils.scan_in_dim(body, 0., xs, axis=1, keepdims=True)
  assert seen == [(2, 1, 4)]
  np.testing.assert_allclose(c, xs.sum())
  np.testing.assert_allclose(ys, xs * 2)


def test_scan_in_dim_bad_axis():
  with pytest.raises(ValueError, match='invalid axes'):
    jax_utils.scan_in_dim(lambda c, x: (c, x), 0., jnp.zeros((2, 3)),
                          axis=(0, 0))


def test_partial_eval_by_shape():
  def fn(scale, x):
    with jax.ensure_compile_time_eval():
      const = jnp.full((2,), scale)
    return x @ jnp.ones((3, 4)), const

  out, const = jax_utils.partial_eval_by_shape(fn, [((5, 3), jnp.float32)],
                                               2.)
  assert out.shape == (5, 4) and isinstance(out, jax.ShapeDtypeStruct)
  np.testing.assert_array_equal(const, [2., 2.])


def test_replicated_arrays_have_the_sharding_of_pmap_outputs():
  # Otherwise the second pmap step sees new input shardings and recompiles.
  step = jax.pmap(lambda x: jax.lax.pmean(x, 'batch') + 1, axis_name='batch')
  replicated = jax_utils.replicate(np.ones(3, np.float32))
  assert replicated.sharding == step(replicated).sharding
  other = jax.pmap(lambda x: x * 2, axis_name='model')
  replicated = jax_utils.replicate(np.ones(3, np.float32), axis_name='model')
  assert replicated.sharding == other(replicated).sharding
