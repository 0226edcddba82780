"""Tests of flaxish.nn.attention against a NumPy attention written here."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import jax_utils, nn
from tests.nn._layer_testing import check_grads_fd
from tests.nn._layer_testing import KEY, as_np, np_init, rand

INITS = dict(kernel_init=np_init, bias_init=np_init)


def _np_softmax(x, axis):
  x = x - x.max(axis, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis, keepdims=True)


def _np_attention(q, k, v, mask=None, keep=None, keep_prob=1.):
  """1-d attention: q `(B, Lq, H, D)`, k/v `(B, Lk, H, D)`; mask broadcasts
  to `(B, H, Lq, Lk)` (True = attend)."""
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(mask, logits, -1e10)
  w = _np_softmax(logits, -1)
  if keep is not None:
    w = w * keep / keep_prob
  return np.einsum('bhqk,bkhd->bqhd', w, v)


def _np_mha(p, xq, xkv, mask=None, **kw):
  """Multi-head attention over axis 1 of `(B, L, F)` inputs, with params."""
  proj = lambda x, name: (np.einsum('blf,fhd->blhd', x, p[name]['kernel']) +
                          p[name]['bias'])
  o = _np_attention(proj(xq, 'query'), proj(xkv, 'key'), proj(xkv, 'value'),
                    mask, **kw)
  return np.einsum('blhd,hdf->blf', o, p['out']['kernel']) + p['out']['bias']


def _flatten_positions(x):
  """`(B, d1, d2, F)` -> `(B, d1 * d2, F)`, row-major."""
  return x.reshape(x.shape[0], -1, x.shape[-1])


# ------------------------------------------------- dot_product_attention ----


def test_dot_product_attention_1d_with_bias():
  q, k, v = rand((2, 3, 2, 4), 0), rand((2, 5, 2, 4), 1), rand((2, 5, 2, 3), 2)
  bias = rand((2, 1, 3, 5), 3)
  y = nn.dot_product_attention(q, k, v, bias=bias)
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / 2. + bias
  expected = np.einsum('bhqk,bkhd->bqhd', _np_softmax(logits, -1), v)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_dot_product_attention_over_two_axes_is_attention_over_positions():
  q, k, v = rand((2, 3, 2, 1, 4), 0), rand((2, 3, 2, 1, 4), 1), rand(
      (2, 3, 2, 1, 4), 2)
  y = nn.dot_product_attention(q, k, v, axis=(1, 2))
  flat = lambda a: a.reshape(2, 6, 1, 4)
  np.testing.assert_allclose(y.reshape(2, 6, 1, 4),
                             _np_attention(flat(q), flat(k), flat(v)),
                             rtol=1e-5, atol=1e-5)


def test_dot_product_attention_bf16_and_gradients():
  q, k, v = (jnp.asarray(rand((1, 3, 2, 4), s)) for s in range(3))
  y = nn.dot_product_attention(q, k, v, dtype=jnp.bfloat16)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), _np_attention(
      *(np.asarray(a) for a in (q, k, v))), rtol=5e-2, atol=5e-2)
  check_grads_fd(nn.dot_product_attention, (q, k, v))


def test_dot_product_attention_shape_errors():
  with pytest.raises(ValueError, match='must have the same depth'):
    nn.dot_product_attention(jnp.ones((1, 2, 1, 3)), jnp.ones((1, 2, 1, 4)),
                             jnp.ones((1, 2, 1, 4)))
  with pytest.raises(ValueError, match='attention axis 3 must lie between'):
    nn.dot_product_attention(*[jnp.ones((1, 2, 1, 3))] * 3, axis=3)


# -------------------------------------------- MultiHeadDotProductAttention ----


def test_self_attention_matches_numpy_and_param_layout():
  x = rand((2, 4, 6))
  y, params = nn.SelfAttention.init(KEY, x, num_heads=2, **INITS)
  shapes = jax.tree_util.tree_map(np.shape, params)
  assert shapes == {
      'query': {'kernel': (6, 2, 3), 'bias': (2, 3)},
      'key': {'kernel': (6, 2, 3), 'bias': (2, 3)},
      'value': {'kernel': (6, 2, 3), 'bias': (2, 3)},
      'out': {'kernel': (2, 3, 6), 'bias': (6,)}}
  np.testing.assert_allclose(y, _np_mha(as_np(params), x, x), rtol=1e-4,
                             atol=1e-4)


def test_cross_attention_with_qkv_and_out_features():
  xq, xkv = rand((2, 3, 5), 0), rand((2, 7, 4), 1)
  y, params = nn.MultiHeadDotProductAttention.init(
      KEY, xq, xkv, num_heads=2, qkv_features=8, out_features=3, **INITS)
  assert y.shape == (2, 3, 3)
  assert params['key']['kernel'].shape == (4, 2, 4)
  assert params['out']['kernel'].shape == (2, 4, 3)
  np.testing.assert_allclose(y, _np_mha(as_np(params), xq, xkv), rtol=1e-4,
                             atol=1e-4)


def _masks_case():
  b, l = 2, 5
  pad_q = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  pad_k = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 1, 0]])
  seg = np.array([[1, 1, 2, 2, 2], [1, 2, 2, 3, 3]])
  seg_k = np.array([[1, 2, 2, 2, 3], [1, 1, 2, 3, 3]])
  causal = np.tril(np.ones((l, l), bool))
  return b, l, pad_q, pad_k, seg, seg_k, causal


@pytest.mark.parametrize('kind', ['causal', 'padding', 'key_padding',
                                  'segmentation', 'key_segmentation', 'all'])
def test_masks_match_numpy(kind):
  b, l, pad_q, pad_k, seg, seg_k, causal = _masks_case()
  x = rand((b, l, 4))
  kwargs, mask = {}, np.ones((b, 1, l, l), bool)
  if kind in ('causal', 'all'):
    kwargs['causal_mask'] = True
    mask &= causal
  if kind in ('padding', 'all'):
    kwargs['padding_mask'] = pad_q[..., None]  # (B, L, 1) is accepted
    mask &= (pad_q[:, None, :, None] * pad_q[:, None, None, :]) > 0
  if kind == 'key_padding':
    kwargs.update(padding_mask=pad_q, key_padding_mask=pad_k)
    mask &= (pad_q[:, None, :, None] * pad_k[:, None, None, :]) > 0
  if kind in ('segmentation', 'all'):
    kwargs['segmentation'] = seg
    mask &= seg[:, None, :, None] == seg[:, None, None, :]
  if kind == 'key_segmentation':
    kwargs.update(segmentation=seg, key_segmentation=seg_k)
    mask &= seg[:, None, :, None] == seg_k[:, None, None, :]
  y, params = nn.SelfAttention.init(KEY, x, num_heads=2, **kwargs, **INITS)
  np.testing.assert_allclose(y, _np_mha(as_np(params), x, x, mask),
                             rtol=1e-4, atol=1e-4)


def test_make_padding_and_causal_masks():
  pq, pk = np.array([[1, 0, 1]]), np.array([[1, 1, 0, 0]])
  m = nn.attention.make_padding_mask(pq, pk, (1, 3, 2, 5), (1, 4, 2, 5))
  assert m.shape == (1, 1, 3, 4) and m.dtype == jnp.float32
  np.testing.assert_array_equal(m[0, 0], np.outer(pq[0], pk[0]))
  seg = nn.attention.make_padding_mask(pq, pk, (1, 3, 2, 5), (1, 4, 2, 5),
                                       segmentation_mask=True)
  np.testing.assert_array_equal(seg[0, 0], pq[0][:, None] == pk[0][None])
  c = nn.attention.make_causal_mask(jnp.ones((2, 4, 3, 5)))
  assert c.shape == (1, 1, 4, 4)
  np.testing.assert_array_equal(c[0, 0], np.tril(np.ones((4, 4), bool)))
  c = nn.attention._make_causal_mask(jnp.ones((2, 4, 3, 5)), self_mask=True)
  np.testing.assert_array_equal(c[0, 0], np.tril(np.ones((4, 4), bool), -1))
  c = nn.attention.make_causal_mask(jnp.ones((1, 2, 3, 1, 1)),
                                    attention_axis=(1, 2))
  assert c.shape == (1, 1, 2, 3, 2, 3)
  np.testing.assert_array_equal(c.reshape(6, 6), np.tril(np.ones((6, 6))))


def test_attention_over_two_axes_equals_attention_over_flattened_positions():
  x = rand((2, 2, 3, 4))
  pad = np.array([[[1, 1, 1], [1, 0, 1]], [[1, 1, 0], [1, 1, 1]]])
  y, params = nn.SelfAttention.init(KEY, x, num_heads=2, causal_mask=True,
                                    padding_mask=pad, **INITS)
  flat_pad = pad.reshape(2, 6)
  mask = (np.tril(np.ones((6, 6), bool)) &
          ((flat_pad[:, None, :, None] * flat_pad[:, None, None, :]) > 0))
  expected = _np_mha(as_np(params), _flatten_positions(x),
                     _flatten_positions(x), mask)
  np.testing.assert_allclose(_flatten_positions(np.asarray(y)), expected,
                             rtol=1e-4, atol=1e-4)


def test_attention_along_one_axis_of_a_2d_input():
  x = rand((2, 3, 4, 4))  # attend along axis 2, independently for each row
  y, params = nn.SelfAttention.init(KEY, x, num_heads=2, attention_axis=-2,
                                    causal_mask=True, **INITS)
  rows = x.reshape(6, 4, 4)
  expected = _np_mha(as_np(params), rows, rows,
                     np.tril(np.ones((4, 4), bool)))
  np.testing.assert_allclose(np.asarray(y).reshape(6, 4, 4), expected,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('broadcast', [True, False])
def test_dropout_on_the_attention_weights(broadcast):
  x = rand((2, 3, 4))
  rng = jax.random.PRNGKey(7)
  kw = dict(num_heads=2, dropout_rate=0.5, broadcast_dropout=broadcast,
            **INITS)
  y, params = nn.SelfAttention.init(KEY, x, dropout_rng=rng, **kw)
  shape = (1, 1, 3, 3) if broadcast else (2, 2, 3, 3)  # (B, H, Lq, Lk)
  keep = np.asarray(jax.random.bernoulli(rng, 0.5, shape), np.float64)
  np.testing.assert_allclose(
      y, _np_mha(as_np(params), x, x, keep=keep, keep_prob=0.5), rtol=1e-4,
      atol=1e-4)
  y_eval = nn.SelfAttention.call(params, x, deterministic=True, **kw)
  np.testing.assert_allclose(y_eval, _np_mha(as_np(params), x, x),
                             rtol=1e-4, atol=1e-4)
  with nn.stochastic(rng):  # without dropout_rng: make_rng()
    nn.SelfAttention.call(params, x, **kw)


def test_attention_bf16_compute_and_gradients():
  x = jnp.asarray(rand((1, 3, 4)))
  y, params = nn.SelfAttention.init(KEY, x, num_heads=2, dtype=jnp.bfloat16,
                                    causal_mask=True, **INITS)
  assert y.dtype == jnp.bfloat16
  assert params['query']['kernel'].dtype == jnp.float32
  mask = np.tril(np.ones((3, 3), bool))
  np.testing.assert_allclose(np.asarray(y, np.float32),
                             _np_mha(as_np(params), np.asarray(x),
                                     np.asarray(x), mask),
                             rtol=1e-1, atol=1e-1)
  check_grads_fd(lambda p, x: nn.SelfAttention.call(
      p, x, num_heads=2, causal_mask=True), (params, x))


def test_heads_must_divide_the_features():

  class Net(nn.Module):

    def apply(self, x, **kw):
      return nn.SelfAttention(x, name='attn', **kw)

  with pytest.raises(ValueError, match=r'^/attn: MultiHeadDotProductAttention'
                     r': qkv_features=6 \(the feature size of inputs_q unless '
                     r'given\) must be divisible by num_heads=4'):
    Net.init(KEY, jnp.ones((1, 2, 6)), num_heads=4)
  with pytest.raises(ValueError, match=r'^/attn: .*qkv_features=10 .* '
                     'num_heads=3'):
    Net.init(KEY, jnp.ones((1, 2, 6)), num_heads=3, qkv_features=10)
  with pytest.raises(ValueError, match=r'^/attn: MultiHeadDotProductAttention'
                     r': attention_axis=-1 must name position axes of the '
                     r'inputs \(1, 2, 6\)'):
    Net.init(KEY, jnp.ones((1, 2, 6)), num_heads=2, attention_axis=-1)


# ----------------------------------------------------------------- Cache ----


def _init_with_cache(x, **kw):
  with nn.attention.Cache().mutate() as cache_def:
    _, params = nn.SelfAttention.init_by_shape(
        KEY, [(x.shape, jnp.float32)], num_heads=2, causal_mask=True,
        cache=cache_def, **INITS, **kw)
  return params, cache_def


def test_cache_decoding_step_by_step_equals_the_causal_pass():
  x = rand((2, 5, 4))
  params, cache_def = _init_with_cache(x)
  assert isinstance(cache_def, nn.attention.Cache)
  full = nn.SelfAttention.call(params, x, num_heads=2, causal_mask=True)
  cache = cache_def.initialize_cache((2, 5))
  assert cache['/'].key.shape == (2, 5, 2, 2)
  outputs = []
  for t in range(5):
    with cache.mutate() as cache:
      outputs.append(nn.SelfAttention.call(params, x[:, t:t + 1],
                                           num_heads=2, causal_mask=True,
                                           cache=cache))
  np.testing.assert_allclose(np.concatenate(outputs, 1), full, rtol=1e-5,
                             atol=1e-5)
  assert int(cache['/'].i) == 5
  # Decoding past the end is an error (the index is concrete here).
  with pytest.raises(ValueError, match=r'^/: MultiHeadDotProductAttention: '
                     r'the decoding cache is full: it holds 5 positions'):
    with cache.mutate() as cache:
      nn.SelfAttention.call(params, x[:, :1], num_heads=2, causal_mask=True,
                            cache=cache)


def _decode_with_scan(params, cache, x, **kw):

  def step(cache, x_t):
    with cache.mutate() as cache:
      y = nn.SelfAttention.call(params, x_t[:, None], num_heads=2,
                                causal_mask=True, cache=cache, **kw)
    return cache, y[:, 0]

  cache, ys = jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))
  return cache, jnp.swapaxes(ys, 0, 1)


def test_cache_decoding_under_jit_and_scan_and_past_the_end():
  x = rand((2, 4, 4))
  params, cache_def = _init_with_cache(x)
  full = nn.SelfAttention.call(params, x, num_heads=2, causal_mask=True)
  decode = jax.jit(_decode_with_scan)
  cache, ys = decode(params, cache_def.initialize_cache((2, 4)), x)
  np.testing.assert_allclose(ys, full, rtol=1e-5, atol=1e-5)
  # Under jit the overflow cannot raise: the outputs become NaN instead.
  _, ys = decode(params, cache, x)
  assert np.isnan(np.asarray(ys)).all()


def test_cache_decoding_with_padding_and_bf16_buffers():
  x = rand((2, 4, 4))
  pad = np.array([[1, 1, 1, 1], [1, 1, 0, 1]])
  params, cache_def = _init_with_cache(x)
  full = nn.SelfAttention.call(params, x, num_heads=2, causal_mask=True,
                               padding_mask=pad)
  cache = cache_def.initialize_cache((2, 4), dtype=jnp.bfloat16)
  assert cache['/'].key.dtype == jnp.bfloat16
  for t in range(4):
    with cache.mutate() as cache:
      y = nn.SelfAttention.call(params, x[:, t:t + 1], num_heads=2,
                                causal_mask=True, cache=cache,
                                padding_mask=pad[:, t:t + 1],
                                key_padding_mask=pad)
    real = pad[:, t] == 1  # padded queries attend to nothing in both
    np.testing.assert_allclose(np.asarray(y)[real, 0],
                               np.asarray(full)[real, t], rtol=5e-2,
                               atol=5e-2)


def test_cache_decoding_over_two_attention_axes_with_scan_in_dim():
  x = rand((2, 2, 3, 4))
  params, cache_def = _init_with_cache(x)
  full = nn.SelfAttention.call(params, x, num_heads=2, causal_mask=True)
  cache = cache_def.initialize_cache((2, 2, 3))

  def step(cache, x_ij):  # x_ij: (batch, 1, 1, features)
    with cache.mutate() as cache:
      y = nn.SelfAttention.call(params, x_ij, num_heads=2, causal_mask=True,
                                cache=cache)
    return cache, y

  cache, ys = jax.jit(lambda c, x: jax_utils.scan_in_dim(
      step, c, x, axis=(1, 2), keepdims=True))(cache, x)
  np.testing.assert_allclose(ys, full, rtol=1e-5, atol=1e-5)
  assert int(cache['/'].i) == 6


def test_cache_errors():
  x = rand((1, 3, 4))
  params, cache_def = _init_with_cache(x)

  class Net(nn.Module):

    def apply(self, x, cache=None, causal_mask=True):
      return nn.SelfAttention(x, num_heads=2, causal_mask=causal_mask,
                              cache=cache, name='attn')

  with pytest.raises(ValueError, match='must give the batch and position '
                     r'dims of the decoded inputs \(2 dims\)'):
    cache_def.initialize_cache((1, 3, 3))
  with pytest.raises(ValueError, match='records no attention layer'):
    nn.attention.Cache().initialize_cache((1, 3))
  with pytest.raises(ValueError, match=r'^/attn: MultiHeadDotProductAttention:'
                     ' a decoding cache needs causal_mask=True'):
    Net.init(KEY, x, cache=cache_def, causal_mask=False)
  with cache_def.mutate() as not_initialized:
    with pytest.raises(ValueError, match='the decoding cache is not '
                       'initialized for this layer'):
      nn.SelfAttention.call(params, x[:, :1], num_heads=2, causal_mask=True,
                            cache=not_initialized)
  with cache_def.initialize_cache((1, 3)).mutate() as cache:
    with pytest.raises(ValueError, match='one position per call'):
      nn.SelfAttention.call(params, x, num_heads=2, causal_mask=True,
                            cache=cache)


def test_scan_in_dim_alias_is_deprecated():
  with pytest.warns(DeprecationWarning, match='jax_utils.scan_in_dim'):
    _, ys = nn.attention.scan_in_dim(lambda c, x: (c + x, c), 0.,
                                     jnp.arange(3.))
  np.testing.assert_array_equal(ys, [0., 0., 1.])
