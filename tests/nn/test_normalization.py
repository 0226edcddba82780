"""Tests of flaxish.nn.normalization against NumPy implementations."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from tests.nn._layer_testing import check_grads_fd
from tests.nn._layer_testing import KEY, as_np, np_init, rand

AFFINE = dict(scale_init=np_init, bias_init=np_init)


def _np_normalize(x, axes, eps):
  x = np.asarray(x, np.float64)
  mean = x.mean(axes, keepdims=True)
  var = x.var(axes, keepdims=True)
  return (x - mean) / np.sqrt(var + eps)


# ------------------------------------------------------------ BatchNorm ----


@pytest.mark.parametrize('shape,axis', [((8, 3), -1), ((4, 3, 5), -1),
                                        ((4, 3, 5), 1), ((2, 3, 4, 5),
                                                         (1, 3))])
def test_batch_norm_matches_numpy(shape, axis):
  x = rand(shape) * 3 + 1
  y, params = nn.BatchNorm.init(KEY, x, axis=axis, epsilon=1e-3, **AFFINE)
  axes = nn.normalization.utils.normalize_axes(
      nn.normalization.utils.as_tuple(axis), len(shape), '')
  reduce_axes = tuple(i for i in range(len(shape)) if i not in axes)
  feature_shape = tuple(shape[a] if a in axes else 1
                        for a in range(len(shape)))
  p = as_np(params)
  assert p['scale'].shape == tuple(shape[a] for a in axes)
  expected = (_np_normalize(x, reduce_axes, 1e-3) *
              p['scale'].reshape(feature_shape) +
              p['bias'].reshape(feature_shape))
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings('ignore:.*running statistics are never updated')
def test_batch_norm_bf16_output_and_gradients():
  x = rand((6, 4)) * 2
  y, params = nn.BatchNorm.init(KEY, x, dtype=jnp.bfloat16, **AFFINE)
  assert y.dtype == jnp.bfloat16 and params['scale'].dtype == jnp.float32
  p = as_np(params)
  expected = _np_normalize(x, (0,), 1e-5) * p['scale'] + p['bias']
  np.testing.assert_allclose(np.asarray(y, np.float32), expected, rtol=2e-2,
                             atol=2e-2)
  check_grads_fd(lambda p, x: nn.BatchNorm.call(p, x),
                 (params, jnp.asarray(x)))


def test_batch_norm_running_statistics_through_stateful():
  x0, x1, x2 = rand((5, 3), 0) + 2, rand((5, 3), 1) * 2, rand((5, 3), 2)
  with nn.stateful() as state:
    _, params = nn.BatchNorm.init(KEY, x0, momentum=0.9)
  # Init creates the statistics (0 and 1) but does not update them.
  np.testing.assert_array_equal(state['/']['mean'], np.zeros(3))
  np.testing.assert_array_equal(state['/']['var'], np.ones(3))

  ra_mean, ra_var = np.zeros(3), np.ones(3)
  for x in (x1, x2):
    with nn.stateful(state) as state:
      nn.BatchNorm.call(params, x, momentum=0.9)
    ra_mean = 0.9 * ra_mean + 0.1 * x.mean(0)
    ra_var = 0.9 * ra_var + 0.1 * x.var(0)
    np.testing.assert_allclose(state['/']['mean'], ra_mean, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(state['/']['var'], ra_var, rtol=1e-5)

  # Evaluation normalizes with the running averages and leaves them alone.
  with nn.stateful(state, mutable=False):
    y = nn.BatchNorm.call(params, x0, use_running_average=True)
  np.testing.assert_allclose(y, (x0 - ra_mean) / np.sqrt(ra_var + 1e-5),
                             rtol=1e-5, atol=1e-5)


def test_batch_norm_explicit_batch_stats_collection():

  class Net(nn.Module):

    def apply(self, x, stats, train=True):
      x = nn.Dense(x, 3, kernel_init=np_init)
      return nn.BatchNorm(x, batch_stats=stats, momentum=0.5,
                          use_running_average=not train, name='bn')

  x = rand((4, 2))
  with nn.Collection().mutate() as stats:
    _, params = Net.init(KEY, x, stats)
  assert set(stats.as_dict()) == {'/bn'}
  with stats.mutate() as new_stats:
    Net.call(params, x, new_stats)
  h = x @ np.asarray(params['Dense_0']['kernel']) + np.asarray(
      params['Dense_0']['bias'])
  np.testing.assert_allclose(new_stats['/bn']['mean'], 0.5 * h.mean(0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new_stats['/bn']['var'],
                             0.5 + 0.5 * h.var(0), rtol=1e-5)
  y = Net.call(params, x, new_stats, train=False)
  np.testing.assert_allclose(
      y, (h - 0.5 * h.mean(0)) / np.sqrt(0.5 + 0.5 * h.var(0) + 1e-5),
      rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings('ignore:.*running statistics are never updated')
def test_batch_norm_without_state_keeps_no_statistics():
  x = rand((4, 3))
  y, params = nn.BatchNorm.init(KEY, x)
  np.testing.assert_allclose(nn.BatchNorm.call(params, x), y, rtol=1e-6)


def test_batch_norm_use_running_average_without_state_is_an_error():

  class Net(nn.Module):

    def apply(self, x):
      return nn.BatchNorm(x, use_running_average=True, name='bn')

  with pytest.raises(ValueError, match=r'^/bn: BatchNorm\(use_running_'
                     r'average=True\) needs running statistics, but none are '
                     r'available: run it inside `with nn.stateful'):
    Net.init(KEY, jnp.ones((2, 3)))


def test_batch_norm_outside_stateful_warns_once_per_module_path():
  # Without state BatchNorm normalizes with the batch statistics and keeps no
  # running averages, as in 2020, but says so once per module path.

  class Net(nn.Module):

    def apply(self, x, train=True):
      x = nn.BatchNorm(x, use_running_average=not train, name='warn_a')
      return nn.BatchNorm(x, use_running_average=not train, name='warn_b')

  x = rand((6, 3)) * 2 + 1
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('default')  # Python's default for UserWarning
    with nn.stateful() as state:
      _, params = Net.init(KEY, x)
    with nn.stateful(state) as state:  # tracked: no warning
      Net.call(params, x)
    with nn.stateful(state, mutable=False):
      Net.call(params, x, train=False)
    assert not caught
    _, unused_params = Net.init(KEY, x)  # initializing: nothing to update
    assert not caught
    for _ in range(2):
      y = Net.call(params, x)
      jax.jit(Net.call)(params, x)
    nn.tabulate(nn.Model(Net, params), x, print_table=False)  # abstract
  messages = [str(w.message) for w in caught]
  assert len(messages) == 2, messages
  for path, message in zip(('/warn_a', '/warn_b'), messages):
    assert message == (
        f'{path}: BatchNorm(use_running_average=False) is called outside '
        '`nn.stateful()` and without batch_stats, so its running statistics '
        'are never updated (it normalizes with the batch statistics only); '
        'to train them, call the model inside `with nn.stateful(state) as '
        'new_state:` with the state from init')
  assert all(w.category is UserWarning for w in caught)
  expected = _np_normalize(_np_normalize(x, (0,), 1e-5), (0,), 1e-5)
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('use_running_average', [False, True])
def test_batch_norm_feature_mismatch_names_the_module(use_running_average):

  class Net(nn.Module):

    def apply(self, x, **kwargs):
      return nn.BatchNorm(x, name='bn', **kwargs)

  with nn.stateful() as state:
    _, params = Net.init(KEY, jnp.ones((4, 3)))
  with pytest.raises(ValueError, match=(
      r'^/bn: BatchNorm: the running statistics were made for 3 features, '
      r'but the input of shape \(4, 6\) has 6 features along axis 1; give it '
      r'inputs with the features it was initialized with, or initialize the '
      r'model again \(under `with nn.stateful\(\) as state:`\) for the new '
      r'feature count$')):
    with nn.stateful(state):
      Net.call(params, jnp.ones((4, 6)),
               use_running_average=use_running_average)
  with nn.stateful() as state:
    _, params = Net.init(KEY, jnp.ones((2, 3, 5)), axis=(1, 2))
  with pytest.raises(ValueError, match=(
      r'^/bn: BatchNorm: the running statistics were made for feature shape '
      r'\(3, 5\), but the input of shape \(2, 3, 6\) has feature shape '
      r'\(3, 6\) along axes \(1, 2\); give it inputs')):
    with nn.stateful(state):
      Net.call(params, jnp.ones((2, 3, 6)), axis=(1, 2))


def _pmap_batch_norm(x, params, state, **kwargs):

  def step(params, state, x):
    with nn.stateful(state) as new_state:
      y = nn.BatchNorm.call(params, x, momentum=0.8, axis_name='batch',
                            **kwargs)
    return y, new_state

  rep = lambda t: jax.tree_util.tree_map(
      lambda a: jnp.broadcast_to(a, (8,) + a.shape), t)
  return jax.pmap(step, axis_name='batch')(rep(params), rep(state), x)


def test_batch_norm_axis_name_syncs_statistics_across_8_devices():
  assert jax.local_device_count() == 8
  x = rand((8, 2, 3)) * np.arange(1, 9)[:, None, None]  # 2 rows per device
  with nn.stateful() as state:
    _, params = nn.BatchNorm.init(KEY, x[0], **AFFINE)
  y, new_state = _pmap_batch_norm(x, params, state)

  flat = x.reshape(16, 3)
  mean, var = flat.mean(0), flat.var(0)
  p = as_np(params)
  expected = (x - mean) / np.sqrt(var + 1e-5) * p['scale'] + p['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
  stats = new_state['/']
  for replica in range(8):  # identical on all replicas
    np.testing.assert_array_equal(stats['mean'][replica], stats['mean'][0])
    np.testing.assert_array_equal(stats['var'][replica], stats['var'][0])
  np.testing.assert_allclose(stats['mean'][0], 0.2 * mean, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(stats['var'][0], 0.8 + 0.2 * var, rtol=1e-5)


def test_batch_norm_axis_index_groups():
  x = rand((8, 2, 3)) + np.arange(8)[:, None, None]
  with nn.stateful() as state:
    _, params = nn.BatchNorm.init(KEY, x[0])
  groups = [[0, 1, 2, 3], [4, 5, 6, 7]]
  _, new_state = _pmap_batch_norm(x, params, state, axis_index_groups=groups)
  for group in groups:
    flat = x[group].reshape(-1, 3)
    for replica in group:
      np.testing.assert_allclose(new_state['/']['mean'][replica],
                                 0.2 * flat.mean(0), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ LayerNorm ----


@pytest.mark.parametrize('shape', [(3, 6), (2, 3, 5)])
def test_layer_norm_matches_numpy(shape):
  x = rand(shape) * 4 - 1
  y, params = nn.LayerNorm.init(KEY, x, **AFFINE)
  p = as_np(params)
  assert p['scale'].shape == (shape[-1],)
  expected = _np_normalize(x, (-1,), 1e-6) * p['scale'] + p['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_layer_norm_bf16_and_gradients():
  x = rand((3, 6))
  y, params = nn.LayerNorm.init(KEY, x, dtype=jnp.bfloat16,
                                param_dtype=jnp.bfloat16)
  assert y.dtype == jnp.bfloat16 and params['scale'].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             _np_normalize(x, (-1,), 1e-6), rtol=2e-2,
                             atol=2e-2)
  _, params = nn.LayerNorm.init(KEY, x, **AFFINE)
  check_grads_fd(lambda p, x: nn.LayerNorm.call(p, x),
                 (params, jnp.asarray(x)))


def test_layer_norm_without_scale_and_bias_has_no_params():
  _, params = nn.LayerNorm.init(KEY, jnp.ones((2, 3)), scale=False,
                                bias=False)
  assert params == {}


# ------------------------------------------------------------ GroupNorm ----


@pytest.mark.parametrize('shape,kwargs,groups', [
    ((2, 4, 6), {'num_groups': 3}, 3),
    ((2, 3, 3, 8), {'num_groups': None, 'group_size': 2}, 4),
    ((3, 4), {'num_groups': 2, 'dtype': jnp.bfloat16}, 2),
])
def test_group_norm_matches_numpy(shape, kwargs, groups):
  x = rand(shape) * 2 + 1
  y, params = nn.GroupNorm.init(KEY, x, **kwargs, **AFFINE)
  p = as_np(params)
  c = shape[-1]
  assert p['scale'].shape == (1,) * (len(shape) - 1) + (c,)
  grouped = x.reshape(shape[:-1] + (groups, c // groups))
  axes = tuple(range(1, len(shape) - 1)) + (len(shape),)
  expected = _np_normalize(grouped, axes, 1e-6).reshape(shape)
  expected = expected * p['scale'] + p['bias']
  bf16 = kwargs.get('dtype') == jnp.bfloat16
  assert y.dtype == (jnp.bfloat16 if bf16 else jnp.float32)
  np.testing.assert_allclose(np.asarray(y, np.float32), expected,
                             rtol=3e-2 if bf16 else 1e-4,
                             atol=3e-2 if bf16 else 1e-4)


def test_group_norm_gradients():
  x = jnp.asarray(rand((2, 3, 4)))
  _, params = nn.GroupNorm.init(KEY, x, num_groups=2, **AFFINE)
  check_grads_fd(lambda p, x: nn.GroupNorm.call(p, x, num_groups=2),
                 (params, x))


class _GroupNet(nn.Module):

  def apply(self, x, **kwargs):
    return nn.GroupNorm(x, name='gn', **kwargs)


@pytest.mark.parametrize('kwargs,message', [
    ({'num_groups': 4}, r'^/gn: GroupNorm: the number of channels \(6\) is '
     r'not divisible by num_groups \(4\)'),
    ({'num_groups': None, 'group_size': 4}, r'^/gn: GroupNorm: the number of '
     r'channels \(6\) is not a multiple of group_size \(4\)'),
    ({'group_size': 2}, r'^/gn: GroupNorm takes exactly one of num_groups and '
     r'group_size, got num_groups=32, group_size=2; to set group_size, also '
     r'pass num_groups=None'),
    ({'num_groups': None}, r'^/gn: GroupNorm takes exactly one of num_groups '
     r'and group_size, got num_groups=None, group_size=None'),
])
def test_group_norm_bad_groups(kwargs, message):
  with pytest.raises(ValueError, match=message):
    _GroupNet.init(KEY, jnp.ones((2, 6)), **kwargs)
