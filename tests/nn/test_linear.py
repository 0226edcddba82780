"""Tests of flaxish.nn.linear against NumPy implementations written here."""
import re

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from tests.nn._layer_testing import check_grads_fd
from tests.nn._layer_testing import KEY, np_conv, np_init
from tests.nn._layer_testing import as_np as _np
from tests.nn._layer_testing import rand as _rand

INITS = dict(kernel_init=np_init, bias_init=np_init)


# ---------------------------------------------------------------- Dense ----


@pytest.mark.parametrize('shape,features', [((3, 5), 4), ((2, 3, 4), 2),
                                            ((7,), 3)])
def test_dense_matches_numpy(shape, features):
  x = _rand(shape)
  y, params = nn.Dense.init(KEY, x, features=features,
                            **INITS)
  p = _np(params)
  assert p['kernel'].shape == (shape[-1], features)
  assert p['bias'].shape == (features,)
  np.testing.assert_allclose(y, x @ p['kernel'] + p['bias'], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(nn.Dense.call(params, x, features=features), y)


def test_dense_gradients_match_analytic_numpy():
  x = _rand((4, 3))
  g = _rand((4, 2), seed=1)
  _, params = nn.Dense.init(KEY, x, features=2, **INITS)
  y, vjp = jax.vjp(lambda p, x: nn.Dense.call(p, x, features=2), params, x)
  dparams, dx = vjp(jnp.asarray(g))
  p = _np(params)
  np.testing.assert_allclose(dparams['kernel'], x.T @ g, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dparams['bias'], g.sum(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, g @ p['kernel'].T, rtol=1e-5, atol=1e-5)
  assert y.shape == (4, 2)


def test_dense_without_bias_has_only_a_kernel():
  _, params = nn.Dense.init(KEY, np.ones((2, 3), np.float32), features=4,
                            bias=False)
  assert set(params) == {'kernel'}


def test_dense_bf16_compute_over_f32_params():
  x = _rand((4, 8))
  y, params = nn.Dense.init(KEY, x, features=3, dtype=jnp.bfloat16,
                            **INITS)
  assert y.dtype == jnp.bfloat16
  assert params['kernel'].dtype == jnp.float32
  p = _np(params)
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             x @ p['kernel'] + p['bias'], rtol=5e-2,
                             atol=5e-2)


def test_dense_param_dtype_stores_params_in_that_dtype():
  x = _rand((2, 8))
  y, params = nn.Dense.init(KEY, x, features=3, param_dtype=jnp.bfloat16)
  assert params['kernel'].dtype == jnp.bfloat16
  assert params['bias'].dtype == jnp.bfloat16
  assert y.dtype == jnp.float32
  # The stored kernel is the float32 initializer's value, rounded.
  _, f32 = nn.Dense.init(KEY, x, features=3)
  np.testing.assert_allclose(np.asarray(params['kernel'], np.float32),
                             f32['kernel'], rtol=1e-2, atol=1e-2)
  np.testing.assert_allclose(
      y, x @ np.asarray(params['kernel'], np.float32), rtol=1e-5, atol=1e-5)


def test_precision_is_passed_to_lax():
  x = jnp.ones((2, 3))
  _, params = nn.Dense.init(KEY, x, features=2, **INITS)
  jaxpr = jax.make_jaxpr(lambda p, x: nn.Dense.call(
      p, x, features=2, precision=lax.Precision.HIGHEST))(params, x)
  assert 'HIGHEST' in str(jaxpr)
  _, cparams = nn.Conv.init(KEY, jnp.ones((1, 4, 2)), features=2,
                            kernel_size=(3,), **INITS)
  jaxpr = jax.make_jaxpr(lambda p, x: nn.Conv.call(
      p, x, features=2, kernel_size=(3,), precision=lax.Precision.HIGHEST))(
          cparams, jnp.ones((1, 4, 2)))
  assert 'HIGHEST' in str(jaxpr)


def test_layers_run_under_named_scopes_with_their_module_path():

  class Net(nn.Module):

    def apply(self, x, rng):
      x = nn.Dense(x, 4, name='hidden', **INITS)
      x = nn.dropout(x, 0.5, rng=rng)
      x = nn.Conv(x[..., None], 2, (3,), **INITS)
      x = nn.max_pool(x, (2,))
      return nn.SelfAttention(x, num_heads=1, name='attn', **INITS)

  x, rng = jnp.ones((1, 3)), jax.random.PRNGKey(1)
  _, params = Net.init(KEY, x, rng, name='net')
  text = jax.jit(lambda p, x: Net.call(p, x, rng, name='net')).lower(
      params, x).as_text(debug_info=True)
  scopes = set(re.findall(r'"jit\([^)]*\)/([^"]*)/[a-z_]+"', text))
  for scope in ('net/hidden', 'net/dropout', 'net/Conv_0',
                'net/max_pool/pool', 'net/attn/query',
                'net/attn/dot_product_attention', 'net/attn/out'):
    assert scope in scopes, sorted(scopes)


# --------------------------------------------------------- DenseGeneral ----


@pytest.mark.parametrize('shape,axis,batch_dims,features,expr', [
    ((2, 3, 4), -1, (), 5, 'abk,kf->abf'),
    ((2, 3, 4), (1, 2), (), (5, 6), 'ajk,jkfg->afg'),
    ((2, 3, 4), (-2, -1), (), 5, 'ajk,jkf->af'),
    ((2, 3, 4, 5), (2,), (0,), 6, 'bijk,bjf->bikf'),
    ((2, 3, 4, 5), (3, 2), (0, 1), (2, 3), 'bcjk,bckjfg->bcfg'),
])
def test_dense_general_matches_einsum(shape, axis, batch_dims, features,
                                      expr):
  x = _rand(shape)
  y, params = nn.DenseGeneral.init(KEY, x, features=features, axis=axis,
                                   batch_dims=batch_dims,
                                   **INITS)
  p = _np(params)
  nb = len(nn.linear.utils.as_tuple(batch_dims))
  axes = tuple(a % len(shape) for a in nn.linear.utils.as_tuple(axis))
  feats = nn.linear.utils.as_tuple(features)
  assert p['kernel'].shape == (shape[:nb] + tuple(shape[a] for a in axes) +
                               feats)
  expected = np.einsum(expr, x, p['kernel'])
  n_free = len(shape) - nb - len(axes)
  expected = expected + p['bias'].reshape(shape[:nb] + (1,) * n_free + feats)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_dense_general_calls_the_initializer_once_per_batch_slice():
  calls = []

  def counting_init(key, shape, dtype=jnp.float32):
    del key
    calls.append(shape)
    return jnp.full(shape, float(len(calls)), dtype)

  x = jnp.ones((2, 3, 4))
  _, params = nn.DenseGeneral.init(KEY, x, features=(5,), axis=-1,
                                   batch_dims=(0, 1),
                                   kernel_init=counting_init, bias=False)
  assert calls == [(4, 5)] * 6  # flattened (in, features) per slice
  expected = np.arange(1, 7, dtype=np.float32).reshape(2, 3, 1, 1)
  np.testing.assert_array_equal(params['kernel'],
                                np.broadcast_to(expected, (2, 3, 4, 5)))


def test_dense_general_without_batch_dims_equals_dense():
  x = _rand((3, 4))
  y, params = nn.DenseGeneral.init(KEY, x, features=2)
  y2, dparams = nn.Dense.init(KEY, x, features=2)
  np.testing.assert_array_equal(params['kernel'], dparams['kernel'])
  np.testing.assert_allclose(y, y2, rtol=1e-6)


def test_dense_general_gradients():
  x = jnp.asarray(_rand((2, 3, 4)))
  _, params = nn.DenseGeneral.init(KEY, x, features=(2, 2), axis=(1, 2),
                                   **INITS)
  check_grads_fd(lambda p, x: nn.DenseGeneral.call(
      p, x, features=(2, 2), axis=(1, 2)), (params, x))


def test_dense_general_rejects_non_leading_batch_dims():

  with pytest.raises(ValueError, match=r'^/: DenseGeneral: batch_dims \(1,\) '
                     'must be consecutive leading'):
    nn.DenseGeneral.init(KEY, jnp.ones((2, 3, 4)), features=2, batch_dims=1)


def test_dense_general_rejects_out_of_range_and_repeated_axes():
  x = jnp.ones((2, 3, 4))
  with pytest.raises(ValueError, match=r'^/: DenseGeneral: axis \(3,\) is '
                     'out of range for an input of rank 3$'):
    nn.DenseGeneral.init(KEY, x, features=2, axis=3)
  with pytest.raises(ValueError, match=r'^/: DenseGeneral: axis \(1, -2\) '
                     'has repeated axes$'):
    nn.DenseGeneral.init(KEY, x, features=2, axis=(1, -2))


# ----------------------------------------------------------------- Conv ----


CONV_CASES = [
    # shape, features, kernel_size, kwargs
    ((2, 7, 3), 4, (3,), {}),
    ((2, 7, 3), 4, (3,), {'padding': 'VALID', 'strides': (2,)}),
    ((1, 6, 5, 2), 3, (3, 2), {'strides': (2, 1)}),
    ((1, 6, 5, 2), 3, (3, 3), {'padding': ((1, 0), (2, 1))}),
    ((1, 5, 5, 2), 2, (2, 2), {'kernel_dilation': (2, 1),
                               'padding': 'VALID'}),
    ((1, 4, 4, 2), 2, (3, 3), {'input_dilation': (2, 2),
                               'padding': ((1, 1), (2, 0))}),
    ((2, 5, 5, 4), 6, (3, 3), {'feature_group_count': 2}),
    ((1, 4, 3, 3, 2), 2, (2, 2, 2), {'padding': 'VALID'}),
]


@pytest.mark.parametrize('shape,features,kernel_size,kwargs', CONV_CASES)
def test_conv_matches_numpy(shape, features, kernel_size, kwargs):
  x = _rand(shape)
  y, params = nn.Conv.init(KEY, x, features=features, kernel_size=kernel_size,
                           **INITS, **kwargs)
  groups = kwargs.get('feature_group_count', 1)
  assert params['kernel'].shape == kernel_size + (shape[-1] // groups,
                                                  features)
  p = _np(params)
  expected = np_conv(x, p['kernel'],
                      kwargs.get('strides', (1,) * len(kernel_size)),
                      kwargs.get('padding', 'SAME'),
                      kwargs.get('input_dilation'),
                      kwargs.get('kernel_dilation'), groups) + p['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_conv_unbatched_input_gives_unbatched_output():
  x = _rand((6, 5, 2))
  y, params = nn.Conv.init(KEY, x, features=3, kernel_size=(3, 3), **INITS)
  assert y.shape == (6, 5, 3)
  np.testing.assert_allclose(
      y, nn.Conv.call(params, x[None], features=3, kernel_size=(3, 3))[0],
      rtol=1e-6)


def test_conv_bf16_compute():
  x = _rand((1, 6, 6, 3))
  y, params = nn.Conv.init(KEY, x, features=4, kernel_size=(3, 3),
                           dtype=jnp.bfloat16, **INITS)
  assert y.dtype == jnp.bfloat16 and params['kernel'].dtype == jnp.float32
  p = _np(params)
  expected = np_conv(x, p['kernel'], (1, 1), 'SAME') + p['bias']
  np.testing.assert_allclose(np.asarray(y, np.float32), expected, rtol=5e-2,
                             atol=5e-2)


def test_conv_gradients():
  x = jnp.asarray(_rand((1, 5, 4, 2)))
  kw = dict(features=2, kernel_size=(3, 2), strides=(2, 1))
  _, params = nn.Conv.init(KEY, x, **kw, **INITS)
  check_grads_fd(lambda p, x: nn.Conv.call(p, x, **kw), (params, x))


def test_conv_rejects_wrong_input_rank():

  class Net(nn.Module):

    def apply(self, x):
      return nn.Conv(x, features=2, kernel_size=(3, 3), name='conv')

  with pytest.raises(ValueError, match=r'^/conv: Conv with kernel_size '
                     r'\(3, 3\) expects inputs of shape \(batch, 2 spatial '
                     r'dims, features\), i.e. rank 4 .* got shape \(5,\)'):
    Net.init(KEY, jnp.ones((5,)))
  with pytest.raises(ValueError, match=r'got shape \(1, 2, 3, 4, 5\)'):
    Net.init(KEY, jnp.ones((1, 2, 3, 4, 5)))


def test_conv_rejects_bad_feature_groups_and_padding():
  with pytest.raises(ValueError, match=r'^/: Conv: feature_group_count=2 '
                     'must divide both the input features \\(3\\)'):
    nn.Conv.init(KEY, jnp.ones((1, 4, 3)), features=2, kernel_size=(2,),
                 feature_group_count=2)
  with pytest.raises(ValueError, match=r'padding .* has 1 \(low, high\) pairs '
                     'but the input has 2 spatial'):
    nn.Conv.init(KEY, jnp.ones((1, 4, 4, 3)), features=2, kernel_size=(2, 2),
                 padding=((1, 1),))
  for padding in ('FULL', (1, 1)):
    with pytest.raises(ValueError, match=(
        r"^/: Conv: padding must be 'SAME', 'VALID' or a sequence of 2 "
        rf'\(low, high\) pairs, got {re.escape(repr(padding))}$')):
      nn.Conv.init(KEY, jnp.ones((1, 4, 4, 3)), features=2,
                   kernel_size=(2, 2), padding=padding)


class _ConvNet(nn.Module):

  def apply(self, x, layer, **kwargs):
    return layer(x, features=2, name='conv', **kwargs)


@pytest.mark.parametrize('layer,name,value', [
    (layer, name, value) for layer in (nn.Conv, nn.ConvTranspose)
    for name, value in (('strides', (0, 1)), ('strides', (1, -2)),
                        ('strides', (1.5, 1)), ('kernel_dilation', (1, 0)))
] + [(nn.Conv, 'input_dilation', (0, 1))])
def test_conv_rejects_non_positive_strides_and_dilations(layer, name, value):
  with pytest.raises(ValueError, match=(
      rf'^/conv: {layer.__name__}: {name} must be 2 positive ints, got '
      rf'{name}={re.escape(repr(value))}$')):
    _ConvNet.init(KEY, jnp.ones((1, 6, 6, 3)), layer, kernel_size=(3, 3),
                  **{name: value})


@pytest.mark.parametrize('layer', [nn.Conv, nn.ConvTranspose])
def test_conv_rejects_bad_kernel_size_and_lengths(layer):
  x = jnp.ones((1, 6, 6, 3))
  for kernel_size in [(0, 3), (3, -1), ()]:
    with pytest.raises(ValueError, match=(
        rf'^/conv: {layer.__name__} needs kernel_size as a tuple of positive '
        rf'ints, got {re.escape(repr(kernel_size))}$')):
      _ConvNet.init(KEY, x, layer, kernel_size=kernel_size)
  with pytest.raises(ValueError, match=(
      rf'^/conv: {layer.__name__}: strides=\(1, 1, 1\) must have one entry '
      r'per spatial dimension \(2\)$')):
    _ConvNet.init(KEY, x, layer, kernel_size=(3, 3), strides=(1, 1, 1))


@pytest.mark.parametrize('layer,kwargs,size', [
    (nn.Conv, {'kernel_size': (7, 3), 'padding': 'VALID'}, 6),
    (nn.Conv, {'kernel_size': (3, 3), 'padding': ((-5, -5), (0, 0))}, -4),
    (nn.Conv, {'kernel_size': (3, 3), 'kernel_dilation': (4, 1),
               'padding': ((1, 1), (0, 0))}, 8),
    (nn.ConvTranspose, {'kernel_size': (3, 3),
                        'padding': ((-9, -9), (0, 0))}, -12),
])
def test_conv_kernel_larger_than_the_padded_input(layer, kwargs, size):
  x = jnp.ones((1, 6, 6, 3))
  extent = (kwargs['kernel_size'][0] - 1) * kwargs.get(
      'kernel_dilation', (1, 1))[0] + 1
  with pytest.raises(ValueError, match=(
      rf'^/conv: {layer.__name__}: the kernel spans {extent} positions along '
      rf'spatial dim 0 .* but the input of shape \(1, 6, 6, 3\) has {size} '
      r'there, after input dilation and padding=.*, so the output would be '
      r"empty; use padding='SAME', a smaller kernel or a larger input$")):
    _ConvNet.init(KEY, x, layer, **kwargs)
  # The same kernel with 'SAME' padding (or a fitting negative padding) runs.
  same = dict(kwargs, padding='SAME')
  assert _ConvNet.init(KEY, x, layer, **same)[0].shape[:3] == (1, 6, 6)
  # Negative padding that leaves room for the kernel crops, as in lax.
  x = _rand((1, 6, 6, 3))
  y, params = nn.Conv.init(KEY, x, features=2, kernel_size=(3, 3),
                           padding=((-1, 0), (0, 0)), **INITS)
  p = _np(params)
  expected = np_conv(x[:, 1:], p['kernel'], (1, 1), 'VALID') + p['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------- ConvTranspose ----


def _np_conv_transpose_valid(x, w, strides):
  """`lax.conv_transpose(..., 'VALID')`: every input pixel adds its value
  times the (spatially flipped, as lax does not flip) kernel at `i * s`."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  n = x.ndim - 2
  k = w.shape[:n]
  wf = w[tuple(slice(None, None, -1) for _ in range(n))]
  out_sp = [(s - 1) * st + kk for s, st, kk in zip(x.shape[1:-1], strides, k)]
  y = np.zeros([x.shape[0]] + out_sp + [w.shape[-1]])
  for idx in np.ndindex(*x.shape[1:-1]):
    window = tuple(slice(i * st, i * st + kk)
                   for i, st, kk in zip(idx, strides, k))
    contrib = np.einsum('bc,...co->b...o', x[(slice(None),) + idx], wf)
    y[(slice(None),) + window] += contrib
  return y


@pytest.mark.parametrize('shape,kernel_size,strides', [
    ((2, 4, 3), (3,), (2,)),
    ((1, 3, 4, 2), (3, 2), (2, 1)),
    ((1, 3, 3, 2), (2, 2), (2, 2)),
])
def test_conv_transpose_valid_matches_numpy(shape, kernel_size, strides):
  x = _rand(shape)
  y, params = nn.ConvTranspose.init(KEY, x, features=3,
                                    kernel_size=kernel_size, strides=strides,
                                    padding='VALID',
                                    **INITS)
  assert params['kernel'].shape == kernel_size + (shape[-1], 3)
  p = _np(params)
  expected = _np_conv_transpose_valid(x, p['kernel'], strides) + p['bias']
  np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_conv_transpose_same_upsamples_by_the_stride():
  x = _rand((2, 4, 5, 3))
  y, params = nn.ConvTranspose.init(KEY, x, features=2, kernel_size=(3, 3),
                                    strides=(2, 2), **INITS)
  assert y.shape == (2, 8, 10, 2)
  y1 = nn.ConvTranspose.call(params, x[0], features=2, kernel_size=(3, 3),
                             strides=(2, 2))
  np.testing.assert_allclose(y1, y[0], rtol=1e-5, atol=1e-6)
  check_grads_fd(lambda p: nn.ConvTranspose.call(
      p, x[:1, :2, :2], features=2, kernel_size=(3, 3), strides=(2, 2)),
                 (params,))


# ---------------------------------------------------------------- Embed ----


def test_embed_lookup_and_attend():
  ids = np.array([[0, 3, 1], [4, 4, 2]])
  y, params = nn.Embed.init(KEY, ids, num_embeddings=5, features=3)
  table = np.asarray(params['embedding'])
  assert table.shape == (5, 3)
  np.testing.assert_array_equal(y, table[ids])
  q = _rand((2, 3))
  logits = nn.Embed.attend.call(params, q)
  np.testing.assert_allclose(logits, q @ table.T, rtol=1e-5, atol=1e-5)
  model = nn.Model(nn.Embed, params)
  np.testing.assert_allclose(model.attend(q), q @ table.T, rtol=1e-5,
                             atol=1e-5)


def test_embed_gradient_scatters_into_the_looked_up_rows():
  ids = np.array([[0, 3, 3], [1, 0, 4]])
  _, params = nn.Embed.init(KEY, ids, num_embeddings=6, features=2,
                            embedding_init=np_init, dtype=jnp.bfloat16)
  g = _rand((2, 3, 2))
  grad = jax.grad(lambda p: jnp.vdot(
      nn.Embed.call(p, ids, num_embeddings=6, features=2).astype(jnp.float32),
      g))(params)
  expected = np.zeros((6, 2))
  np.add.at(expected, ids, g)
  np.testing.assert_allclose(grad['embedding'], expected, rtol=1e-5,
                             atol=1e-6)


def test_embed_default_init_has_unit_variance_per_row():
  _, params = nn.Embed.init(KEY, np.zeros((1,), np.int32),
                            num_embeddings=4000, features=16)
  # variance_scaling(1, fan_in, normal, out_axis=0): fan_in = features.
  np.testing.assert_allclose(np.var(params['embedding']), 1 / 16, rtol=0.1)


def test_shared_embedding_ties_input_and_output():

  class TiedLM(nn.Module):

    def apply(self, ids):
      embed = nn.Embed.shared(num_embeddings=6, features=4, name='embed')
      return embed.attend(embed(ids) * 2.)

  ids = np.array([[1, 5]])
  logits, params = TiedLM.init(KEY, ids)
  assert jax.tree_util.tree_map(np.shape, params) == {
      'embed': {'embedding': (6, 4)}}
  table = np.asarray(params['embed']['embedding'])
  np.testing.assert_allclose(logits, (table[ids] * 2.) @ table.T, rtol=1e-5)


def test_embed_rejects_float_input():

  class Net(nn.Module):

    def apply(self, x):
      return nn.Embed(x, num_embeddings=3, features=2, name='tokens')

  with pytest.raises(ValueError, match=r'^/tokens: Embed expects integer '
                     r'input \(token ids\), got float32; cast the ids'):
    Net.init(KEY, jnp.ones((2,), jnp.float32))
