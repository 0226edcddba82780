"""Attention: `dot_product_attention`, `MultiHeadDotProductAttention`,
`SelfAttention`, masks, and the autoregressive decoding `Cache`.

Inputs are `[batch, d1, ..., dN, features]`; attention runs jointly over the
attention axes (by default all of `d1..dN`), so images and videos attend
over all their positions at once.
"""
import functools
import warnings
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxish import jax_utils
from flaxish import struct
from flaxish.nn import initializers
from flaxish.nn import stochastic
from flaxish.nn import _util as utils
from flaxish.nn.linear import DenseGeneral, default_kernel_init
from flaxish.nn.modules import Module
from flaxish.nn.collection import Collection

__all__ = ['dot_product_attention', 'MultiHeadDotProductAttention',
           'SelfAttention', 'Cache', 'make_padding_mask', 'make_causal_mask',
           'scan_in_dim']

Array = Any

_MASKED = -1e10  # the attention bias of masked-out positions


def _attention_axes(axis: Any, ndim: int, where: str) -> Tuple[int, ...]:
  """Normalizes attention axes of a `[batch, d1..dN, heads, depth]` array."""
  if axis is None:
    return tuple(range(1, ndim - 2))
  axis = utils.as_tuple(axis)
  out = []
  for ax in axis:
    a = ax + ndim if ax < 0 else ax
    if not 1 <= a < ndim - 2:
      raise ValueError(
          f'{where}: attention axis {ax} must lie between the batch axis and '
          f'the last two (heads, depth) axes of an array of rank {ndim}')
    out.append(a)
  if len(set(out)) != len(out):
    raise ValueError(f'{where}: attention axes {axis} are repeated')
  return tuple(out)


def _positions_to_inputs(values: Array, attention_axis: Tuple[int, ...],
                         shape: Tuple[int, ...]) -> Array:
  """Broadcasts an array over the attention axes (in `attention_axis` order)
  to `shape`, the batch and position axes of the inputs."""
  values = jnp.transpose(values, tuple(np.argsort(attention_axis)))
  full = [1] * len(shape)
  for ax in attention_axis:
    full[ax] = shape[ax]
  return jnp.broadcast_to(values.reshape(full), shape)


def dot_product_attention(query: Array, key: Array, value: Array,
                          dtype: Any = jnp.float32,
                          bias: Optional[Array] = None, axis: Any = None,
                          broadcast_dropout: bool = True,
                          dropout_rng: Optional[Any] = None,
                          dropout_rate: float = 0., deterministic: bool = False,
                          precision: Any = None) -> Array:
  """Attention weights `softmax(q k / sqrt(depth) + bias)` applied to values.

  The softmax runs jointly over all attention axes, in float32 (or wider).

  Arguments:
    query: `[batch, q1..qN, heads, depth]`.
    key: `[batch, k1..kN, heads, depth]`.
    value: `[batch, k1..kN, heads, value_depth]`.
    dtype: the computation dtype (default float32).
    bias: added to the attention logits, broadcastable to
      `[batch, <other axes>, heads, q1..qN, k1..kN]` where `<other axes>`
      are the non-attention axes (e.g. a mask turned into 0 / -1e10).
    axis: the attention axes, an int or tuple (default: all axes between
      batch and heads).
    broadcast_dropout: one dropout mask for all batch elements and heads
      (default True).
    dropout_rng: key for the dropout on the weights (default `make_rng()`).
    dropout_rate: dropout rate on the weights (default 0.).
    deterministic: if True, no dropout (default False).
    precision: `lax.Precision` of the two contractions (default None).
  Returns:
    `[batch, q1..qN, heads, value_depth]` in `dtype`.
  """
  with jax.named_scope('dot_product_attention'):
    query, key, value = (jnp.asarray(a, dtype) for a in (query, key, value))
    where = 'dot_product_attention'
    if not query.ndim == key.ndim == value.ndim or query.ndim < 3:
      raise ValueError(
          f'{where}: query, key and value must have the same rank >= 3 '
          f'([batch, positions..., heads, depth]), got shapes {query.shape}, '
          f'{key.shape}, {value.shape}')
    if key.shape[:-1] != value.shape[:-1]:
      raise ValueError(f'{where}: key {key.shape} and value {value.shape} '
                       'must agree on all axes but the last')
    if query.shape[-1] != key.shape[-1]:
      raise ValueError(f'{where}: query {query.shape} and key {key.shape} '
                       'must have the same depth (last axis)')
    n = query.ndim
    axis = _attention_axes(axis, n, where)
    batch_axes = tuple(i for i in range(n - 1) if i not in axis)
    for i in batch_axes:
      if query.shape[i] != key.shape[i]:
        raise ValueError(
            f'{where}: query {query.shape} and key {key.shape} must agree on '
            f'the non-attention axes (batch, other axes, heads); axis {i} '
            'differs')
    nb, na = len(batch_axes), len(axis)
    perm = batch_axes + axis + (n - 1,)
    # -> [batch axes (incl. heads), attention axes, depth]
    q, k, v = (jnp.transpose(a, perm) for a in (query, key, value))
    q = q / jnp.sqrt(jnp.asarray(query.shape[-1], dtype))
    batch_dims = tuple(range(nb))
    logits = lax.dot_general(q, k, (((n - 1,), (n - 1,)),
                                    (batch_dims, batch_dims)),
                             precision=precision)
    # logits: [batch axes, q attention axes, k attention axes]
    softmax_dtype = jnp.promote_types(dtype, jnp.float32)
    logits = logits.astype(softmax_dtype)
    if bias is not None:
      logits = logits + jnp.asarray(bias, softmax_dtype)
    key_axes = tuple(range(nb + na, nb + 2 * na))
    weights = jax.nn.softmax(logits, axis=key_axes).astype(dtype)

    if not deterministic and dropout_rate > 0.:
      if dropout_rng is None:
        dropout_rng = stochastic.make_rng()
      keep_prob = 1. - dropout_rate
      mask_shape = ((1,) * nb + weights.shape[nb:] if broadcast_dropout
                    else weights.shape)
      keep = jax.random.bernoulli(dropout_rng, keep_prob, mask_shape)
      weights = weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype))

    y = lax.dot_general(weights, v, ((key_axes, tuple(range(nb, nb + na))),
                                     (batch_dims, batch_dims)),
                        precision=precision)
    # y: [batch axes, q attention axes, value depth] -> input layout.
    return jnp.transpose(y, tuple(int(i) for i in np.argsort(perm)))


def make_padding_mask(padding_mask_query: Array, padding_mask_key: Array,
                      query_shape: Sequence[int], key_shape: Sequence[int],
                      attention_axis: Any = None,
                      segmentation_mask: bool = False) -> Array:
  """The attention mask from per-position query and key masks.

  Arguments:
    padding_mask_query: `[batch, q1..qN]` (or with a trailing axis of size
      1): nonzero where the query position is real (not padding), or the
      segment ids of the queries if `segmentation_mask`.
    padding_mask_key: the same for the keys, `[batch, k1..kN]`.
    query_shape: the shape of the projected query `[batch, q1..qN, heads,
      depth]`.
    key_shape: the shape of the projected key `[batch, k1..kN, heads, depth]`.
    attention_axis: the attention axes (default: all between batch and heads).
    segmentation_mask: if True, a query may attend a key iff their segment
      ids are equal (packed sequences); otherwise iff both are nonzero.
  Returns:
    A float32 mask of 1s and 0s, `[batch, <other axes>, 1, q attention
    axes..., k attention axes...]`; it broadcasts against the attention
    weights (the `1` is the heads axis).
  """
  query_shape, key_shape = tuple(query_shape), tuple(key_shape)
  where = 'make_padding_mask'
  if len(query_shape) != len(key_shape) or query_shape[0] != key_shape[0]:
    raise ValueError(f'{where}: query shape {query_shape} and key shape '
                     f'{key_shape} must have the same rank and batch size')
  n = len(query_shape)
  axis = _attention_axes(attention_axis, n, where)
  other = tuple(i for i in range(1, n - 2) if i not in axis)

  def per_position(mask, shape, name):
    mask = jnp.asarray(mask)
    if mask.shape == shape[:-2] + (1,):
      mask = mask[..., 0]
    if mask.shape != shape[:-2]:
      raise ValueError(
          f'{where}: {name} has shape {mask.shape}; expected {shape[:-2]} '
          f'(batch and position axes of the {name.split("_")[-1]} inputs), '
          'optionally with a trailing axis of size 1')
    # -> [batch, other axes, attention axes]
    return jnp.transpose(mask, (0,) + other + axis)

  mq = per_position(padding_mask_query, query_shape, 'padding_mask_query')
  mk = per_position(padding_mask_key, key_shape, 'padding_mask_key')
  na = len(axis)
  mq = mq.reshape(mq.shape + (1,) * na)
  mk = mk.reshape(mk.shape[:1 + len(other)] + (1,) * na +
                  mk.shape[1 + len(other):])
  mask = (jnp.equal(mq, mk) if segmentation_mask
          else jnp.logical_and(mq != 0, mk != 0))
  mask = jnp.expand_dims(mask, 1 + len(other))  # the heads axis
  return mask.astype(jnp.float32)


def make_causal_mask(key: Array, attention_axis: Any = None,
                     self_mask: bool = False) -> Array:
  """A mask that lets each position attend only to itself and earlier ones.

  Positions are ordered row-major over the attention axes (the first listed
  axis varies slowest).

  Arguments:
    key: the key (or any array of its shape), `[batch, d1..dN, heads,
      depth]`; only its shape is used.
    attention_axis: the attention axes (default: all between batch and
      heads).
    self_mask: if True, a position cannot attend to itself either.
  Returns:
    A boolean mask of shape `(1,) * (key.ndim - len(axes) - 1) + attn_shape +
    attn_shape` (True = may attend).
  """
  shape = jnp.shape(key)
  axis = _attention_axes(attention_axis, len(shape), 'make_causal_mask')
  attn_shape = tuple(shape[ax] for ax in axis)
  positions = jnp.arange(int(np.prod(attn_shape)), dtype=jnp.int32)
  mask = positions[:, None] >= positions[None, :] + int(self_mask)
  return mask.reshape((1,) * (len(shape) - len(axis) - 1) + attn_shape +
                      attn_shape)


_make_causal_mask = make_causal_mask  # 2020 name, used by tests and users


@struct.dataclass
class _CacheEntry:
  """One attention layer's cache: keys, values, and the next position `i`."""
  key: Array
  value: Array
  i: Array


class Cache(Collection):
  """Keys and values of the positions decoded so far, per attention layer.

  Pass `cache=` to `MultiHeadDotProductAttention` (with `causal_mask=True`),
  one position per decoding step:

      with nn.attention.Cache().mutate() as cache_def:
        _, params = Decoder.init_by_shape(rng, [((batch, length, d), f32)],
                                          cache=cache_def)
      cache = cache_def.initialize_cache((batch, length))
      for t in range(length):
        with cache.mutate() as cache:
          y_t = Decoder.call(params, x[:, t:t + 1], cache=cache)

  Step `t` writes the key and value of position `t` and attends over
  positions `0..t`, so the outputs equal one causal pass over `x`. Decoding
  past the end is a `ValueError` when eager; under `jit`/`scan`, where it
  cannot raise, the write is clamped onto the last position and the output
  is all NaN.
  """

  def initialize_cache(self, shape: Sequence[int],
                       dtype: Any = None) -> 'Cache':
    """Zeroed key/value buffers for decoding.

    Arguments:
      shape: the batch and attention dims of the full decoded input, e.g.
        `(batch, max_length)` for sequences or `(batch, height, width)` for
        images (the non-attention axes too, if any).
      dtype: the dtype of the buffers (default float32).
    Returns:
      A new (immutable) Cache with, per attention layer, `key` and `value`
      of shape `shape + (heads, depth)` and the position `i = 0`.
    """
    shape = tuple(int(d) for d in shape)
    dtype = jnp.float32 if dtype is None else dtype
    if not self.state:
      raise ValueError(
          'Cache.initialize_cache: this Cache records no attention layer. '
          'Pass it as cache= when initializing the model (inside `with '
          'nn.attention.Cache().mutate() as cache_def:`), with '
          'causal_mask=True')
    state = {}
    for path, meta in self.state.items():
      if isinstance(meta, _CacheEntry):
        meta = np.array((meta.key.ndim,) + meta.key.shape[-2:])
      meta = np.asarray(meta)
      ndim, tail = int(meta[0]), tuple(int(d) for d in meta[1:])
      full_shape = shape + tail
      if len(full_shape) != ndim:
        raise ValueError(
            f'Cache.initialize_cache: shape {shape} must give the batch and '
            f'position dims of the decoded inputs ({ndim - 2} dims), e.g. '
            f'(batch, max_length); the attention layer "{path}" has keys of '
            f'shape (..., {tail[0]} heads, {tail[1]} depth)')
      state[path] = _CacheEntry(key=jnp.zeros(full_shape, dtype),
                                value=jnp.zeros(full_shape, dtype),
                                i=jnp.zeros((), jnp.int32))
    return self.replace_state(state)


def scan_in_dim(*args, **kwargs):
  """Deprecated alias of `flaxish.jax_utils.scan_in_dim`."""
  warnings.warn('nn.attention.scan_in_dim moved to jax_utils.scan_in_dim',
                DeprecationWarning, stacklevel=2)
  return jax_utils.scan_in_dim(*args, **kwargs)


class MultiHeadDotProductAttention(Module):
  """Multi-head dot-product attention (arxiv.org/abs/1706.03762).

  Submodules (each a `DenseGeneral`): `query`, `key`, `value` (kernel
  `(features_in, heads, head_dim)`, bias `(heads, head_dim)`) and `out`
  (kernel `(heads, head_dim, out_features)`, bias `(out_features,)`).
  """

  def apply(self, inputs_q: Array, inputs_kv: Optional[Array], num_heads: int,
            dtype: Any = jnp.float32, qkv_features: Optional[int] = None,
            out_features: Optional[int] = None, attention_axis: Any = None,
            causal_mask: bool = False, padding_mask: Optional[Array] = None,
            key_padding_mask: Optional[Array] = None,
            segmentation: Optional[Array] = None,
            key_segmentation: Optional[Array] = None,
            cache: Optional[Cache] = None, broadcast_dropout: bool = True,
            dropout_rng: Optional[Any] = None, dropout_rate: float = 0.,
            deterministic: bool = False, precision: Any = None,
            kernel_init: Callable[..., Array] = default_kernel_init,
            bias_init: Callable[..., Array] = initializers.zeros,
            bias: bool = True,
            attention_fn: Callable[..., Array] = dot_product_attention,
            param_dtype: Any = jnp.float32) -> Array:
    """Applies multi-head attention.

    Arguments:
      inputs_q: queries `[batch, d1..dN, features]`.
      inputs_kv: keys/values `[batch, k1..kN, features_kv]`, or None for
        self-attention (`inputs_q` is used).
      num_heads: the number of heads; must divide `qkv_features`.
      dtype: the computation dtype (default float32).
      qkv_features: size of the projected queries/keys/values, all heads
        together (default: `inputs_q.shape[-1]`).
      out_features: size of the output (default: `inputs_q.shape[-1]`).
      attention_axis: the attention axes (default: all of `d1..dN`).
      causal_mask: position `t` attends only to positions `<= t` (row-major
        over the attention axes).
      padding_mask: `[batch, d1..dN]` (or with a trailing 1), nonzero at real
        query positions.
      key_padding_mask: the same for the keys (default: `padding_mask`).
      segmentation: `[batch, d1..dN]` segment ids of the queries (packed
        inputs): queries attend only to keys of the same segment.
      key_segmentation: segment ids of the keys (default: `segmentation`).
      cache: a `Cache` for autoregressive decoding (needs `causal_mask`).
      broadcast_dropout, dropout_rng, dropout_rate, deterministic: the
        dropout on the attention weights, as in `dot_product_attention`.
      precision: `lax.Precision` of all contractions (default None).
      kernel_init: initializer of the projection kernels.
      bias_init: initializer of the projection biases.
      bias: whether the projections have biases (default True).
      attention_fn: the attention function (default dot_product_attention).
      param_dtype: the storage dtype of the parameters (default float32).
    Returns:
      `[batch, d1..dN, out_features]` in `dtype`.
    """
    where = f'{self.path}: MultiHeadDotProductAttention'
    inputs_q = jnp.asarray(inputs_q)
    inputs_kv = inputs_q if inputs_kv is None else jnp.asarray(inputs_kv)
    if inputs_q.ndim < 3 or inputs_q.ndim != inputs_kv.ndim:
      raise ValueError(
          f'{where} expects inputs_q and inputs_kv of the same rank >= 3 '
          f'([batch, positions..., features]), got {inputs_q.shape} and '
          f'{inputs_kv.shape}')
    if inputs_q.shape[0] != inputs_kv.shape[0]:
      raise ValueError(f'{where}: inputs_q {inputs_q.shape} and inputs_kv '
                       f'{inputs_kv.shape} have different batch sizes')
    # Attention axes index the inputs; the projected arrays have one more
    # axis (heads) at the end, so non-negative indices stay valid for them.
    if attention_axis is not None:
      given = attention_axis
      attention_axis = tuple(ax + inputs_q.ndim if ax < 0 else ax
                             for ax in utils.as_tuple(attention_axis))
      if any(not 1 <= ax < inputs_q.ndim - 1 for ax in attention_axis):
        raise ValueError(
            f'{where}: attention_axis={given} must name position axes of '
            f'the inputs {inputs_q.shape}, between the batch axis and the '
            'feature axis')
    attention_axis = _attention_axes(attention_axis, inputs_q.ndim + 1, where)
    features = out_features or inputs_q.shape[-1]
    qkv_features = qkv_features or inputs_q.shape[-1]
    if (not isinstance(num_heads, (int, np.integer)) or num_heads <= 0 or
        qkv_features % num_heads):
      raise ValueError(
          f'{where}: qkv_features={qkv_features} (the feature size of '
          'inputs_q unless given) must be divisible by num_heads='
          f'{num_heads}; pass qkv_features= a multiple of num_heads, or '
          'another num_heads')
    head_dim = qkv_features // num_heads
    if cache is not None:
      if not isinstance(cache, Cache):
        raise TypeError(f'{where}: cache must be an nn.attention.Cache, got '
                        f'{type(cache).__name__}')
      if not causal_mask:
        raise ValueError(f'{where}: a decoding cache needs causal_mask=True')

    dense = DenseGeneral.partial(
        axis=-1, features=(num_heads, head_dim), kernel_init=kernel_init,
        bias_init=bias_init, bias=bias, precision=precision, dtype=dtype,
        param_dtype=param_dtype)
    query = dense(inputs_q, name='query')
    key = dense(inputs_kv, name='key')
    value = dense(inputs_kv, name='value')

    decoding = cache is not None and not self.is_initializing()
    overflow = None
    if cache is not None and self.is_initializing():
      cache.store(np.array((key.ndim,) + key.shape[-2:], np.int32))
    elif decoding:
      key, value, position, overflow = self._decode_step(
          cache, query, key, value, attention_axis)
      if padding_mask is not None and key_padding_mask is None:
        # Key positions already decoded are real; the rest are not yet.
        key_padding_mask = _positions_to_inputs(position, attention_axis,
                                                key.shape[:-2])

    masks = []
    if causal_mask:
      if decoding:
        masks.append(position.reshape((1,) * (key.ndim - 1) + position.shape))
      else:
        q_attn = tuple(query.shape[ax] for ax in attention_axis)
        k_attn = tuple(key.shape[ax] for ax in attention_axis)
        if q_attn != k_attn:
          raise ValueError(
              f'{where}: causal_mask needs queries and keys of the same '
              f'attention shape, got {q_attn} and {k_attn}')
        masks.append(make_causal_mask(key, attention_axis))
    for q_mask, k_mask, segments in ((padding_mask, key_padding_mask, False),
                                     (segmentation, key_segmentation, True)):
      if q_mask is not None:
        masks.append(make_padding_mask(
            q_mask, q_mask if k_mask is None else k_mask, query.shape,
            key.shape, attention_axis, segmentation_mask=segments))
    attention_bias = None
    if masks:
      mask = functools.reduce(jnp.logical_and, [m > 0 for m in masks])
      attention_bias = jnp.where(mask, 0., _MASKED).astype(jnp.float32)

    x = attention_fn(
        query, key, value, dtype=dtype, axis=attention_axis,
        bias=attention_bias, precision=precision, dropout_rng=dropout_rng,
        dropout_rate=dropout_rate, broadcast_dropout=broadcast_dropout,
        deterministic=deterministic)
    out = DenseGeneral(
        x, features=features, axis=(-2, -1), kernel_init=kernel_init,
        bias_init=bias_init, bias=bias, dtype=dtype, precision=precision,
        param_dtype=param_dtype, name='out')
    if overflow is not None:
      out = jnp.where(overflow, jnp.asarray(jnp.nan, out.dtype), out)
    return out

  def _decode_step(self, cache: Cache, query: Array, key: Array, value: Array,
                   attention_axis: Tuple[int, ...]):
    """Writes this step's key/value at position `i`; returns `(keys, values,
    valid, overflow)`: `valid` is True at the positions decoded so far, of
    the attention shape; `overflow`, under a trace, is True if it was full.
    """
    where = f'{self.path}: MultiHeadDotProductAttention'
    entry = cache.retrieve(None)
    if not isinstance(entry, _CacheEntry):
      raise ValueError(
          f'{where}: the decoding cache is not initialized for this layer; '
          'build it with cache = cache_def.initialize_cache((batch, length)) '
          'from the Cache passed at init')
    cshape = entry.key.shape
    if len(cshape) != key.ndim or cshape[-2:] != key.shape[-2:]:
      raise ValueError(
          f'{where}: the cache holds keys of shape {cshape} but this layer '
          f'makes keys of shape {key.shape}: was the cache made for another '
          'model?')
    expected = list(cshape[:-2])
    for ax in attention_axis:
      expected[ax] = 1
    if tuple(expected) != query.shape[:-2]:
      raise ValueError(
          f'{where}: decoding with a cache takes one position per call: '
          f'expected inputs of shape {tuple(expected) + ("features",)}, got '
          f'batch and position dims {query.shape[:-2]}')
    attn_shape = tuple(cshape[ax] for ax in attention_axis)
    length = int(np.prod(attn_shape))
    i = entry.i
    overflow = None
    if utils.is_tracer(i):
      overflow = i >= length
    elif int(i) >= length:
      raise ValueError(
          f'{where}: the decoding cache is full: it holds {length} positions '
          f'(attention shape {attn_shape}) and all are decoded; initialize a '
          'longer cache with initialize_cache, or stop decoding')
    # The multi-index of position i, row-major over the attention axes.
    indices = [jnp.zeros((), jnp.int32)] * len(cshape)
    rest = jnp.asarray(i, jnp.int32)
    for ax, size in reversed(list(zip(attention_axis, attn_shape))):
      indices[ax] = rest % size
      rest = rest // size
    keys = lax.dynamic_update_slice(entry.key, key.astype(entry.key.dtype),
                                    indices)
    values = lax.dynamic_update_slice(entry.value,
                                      value.astype(entry.value.dtype), indices)
    new_i = i + 1
    cache.store(entry.replace(key=keys, value=values, i=new_i))
    valid = (jnp.arange(length, dtype=jnp.int32) < new_i).reshape(attn_shape)
    return keys, values, valid, overflow


SelfAttention = MultiHeadDotProductAttention.partial(inputs_kv=None)
