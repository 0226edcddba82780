"""Hand-written JAX: layers, initializers and update rules, no library.

This is the zero-overhead limit the benchmarks compare against. The layer
functions take a params dict laid out like the flaxish layer's (`kernel`,
`bias`, `scale`, `embedding`), compute the same function (same padding, same
statistics, same mask value), and initialize from the same distributions.
"""
import math

import jax
from jax import lax
import jax.numpy as jnp

__all__ = ['lecun_normal', 'embed_normal', 'dense', 'conv', 'batch_norm',
           'layer_norm', 'avg_pool', 'max_pool', 'causal_self_attention',
           'momentum_init', 'momentum_update', 'adam_init', 'adam_update']

# Initializers: the distributions of the flaxish (and Linen) defaults.
lecun_normal = jax.nn.initializers.lecun_normal()
embed_normal = jax.nn.initializers.variance_scaling(1.0, 'fan_in', 'normal',
                                                    out_axis=0)


def dense_init(key, n_in, n_out, bias=True):
  p = {'kernel': lecun_normal(key, (n_in, n_out))}
  if bias:
    p['bias'] = jnp.zeros((n_out,))
  return p


def conv_init(key, kernel_size, n_in, n_out, bias=True):
  p = {'kernel': lecun_normal(key, tuple(kernel_size) + (n_in, n_out))}
  if bias:
    p['bias'] = jnp.zeros((n_out,))
  return p


def norm_init(features, scale_value=1.):
  return {'scale': jnp.full((features,), scale_value, jnp.float32),
          'bias': jnp.zeros((features,))}


def dense(p, x, dtype=jnp.float32):
  y = jnp.dot(x.astype(dtype), p['kernel'].astype(dtype))
  if 'bias' in p:
    y = y + p['bias'].astype(dtype)
  return y


def conv(p, x, strides=(1, 1), padding='SAME'):
  y = lax.conv_general_dilated(x, p['kernel'], strides, padding,
                               dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if 'bias' in p:
    y = y + p['bias']
  return y


def batch_norm(p, stats, x, train, momentum, eps=1e-5):
  """BatchNorm over all axes but the last; returns `(y, new_stats)`."""
  if train:
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.maximum(jnp.mean(lax.square(x), axes) - lax.square(mean), 0.)
    stats = {'mean': momentum * stats['mean'] + (1. - momentum) * mean,
             'var': momentum * stats['var'] + (1. - momentum) * var}
  else:
    mean, var = stats['mean'], stats['var']
  # `scale` folded into the per-channel factor: one full-size multiply.
  return (x - mean) * (lax.rsqrt(var + eps) * p['scale']) + p['bias'], stats


def layer_norm(p, x, eps=1e-6):
  """LayerNorm over the last axis, statistics in float32."""
  dtype = x.dtype
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.maximum(jnp.mean(lax.square(x), -1, keepdims=True) -
                    lax.square(mean), 0.)
  y = (x - mean) * lax.rsqrt(var + eps)
  return (y * p['scale'] + p['bias']).astype(dtype)


def avg_pool(x, window, strides):
  dims = (1,) + tuple(window) + (1,)
  y = lax.reduce_window(x, 0., lax.add, dims, (1,) + tuple(strides) + (1,),
                        'VALID')
  return y / math.prod(window)


def max_pool(x, window, strides, padding='SAME'):
  dims = (1,) + tuple(window) + (1,)
  return lax.reduce_window(x, -jnp.inf, lax.max, dims,
                           (1,) + tuple(strides) + (1,), padding)


def attention_init(key, d, heads):
  kq, kk, kv, ko = jax.random.split(key, 4)
  hd = d // heads
  proj = lambda k: {'kernel': lecun_normal(k, (d, heads * hd)).reshape(
      d, heads, hd), 'bias': jnp.zeros((heads, hd))}
  return {'query': proj(kq), 'key': proj(kk), 'value': proj(kv),
          'out': {'kernel': lecun_normal(ko, (heads * hd, d)).reshape(
              heads, hd, d), 'bias': jnp.zeros((d,))}}


def causal_self_attention(p, x, dtype=jnp.float32):
  """Multi-head causal self-attention of `x: [batch, length, features]`."""
  x = x.astype(dtype)
  proj = lambda q: (jnp.einsum('bld,dhk->blhk', x, q['kernel'].astype(dtype))
                    + q['bias'].astype(dtype))
  q, k, v = proj(p['query']), proj(p['key']), proj(p['value'])
  q = q / jnp.sqrt(jnp.asarray(q.shape[-1], dtype))
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32)
  length = x.shape[1]
  causal = jnp.arange(length)[:, None] >= jnp.arange(length)[None, :]
  logits = logits + jnp.where(causal, 0., -1e10)
  weights = jax.nn.softmax(logits, axis=-1).astype(dtype)
  y = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
  out = p['out']
  return (jnp.einsum('bqhd,hdo->bqo', y, out['kernel'].astype(dtype)) +
          out['bias'].astype(dtype))


# Update rules, written out leaf by leaf with tree_map.

def momentum_init(params):
  return jax.tree_util.tree_map(jnp.zeros_like, params)


def momentum_update(params, momentum, grads, lr, beta):
  """`m = beta * m + g; p -= lr * m` (flax.optim.Momentum, optax.sgd)."""
  momentum = jax.tree_util.tree_map(lambda m, g: beta * m + g, momentum,
                                    grads)
  params = jax.tree_util.tree_map(lambda p, m: p - lr * m, params, momentum)
  return params, momentum


def adam_init(params):
  zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)
  return {'count': jnp.zeros((), jnp.int32), 'mu': zeros(), 'nu': zeros()}


def adam_update(params, state, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
  """Adam with bias correction, `eps` outside the square root."""
  t = state['count'] + 1
  mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1. - b1) * g,
                              state['mu'], grads)
  nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1. - b2) * g * g,
                              state['nu'], grads)
  c1 = 1. - b1**t.astype(jnp.float32)
  c2 = 1. - b2**t.astype(jnp.float32)
  params = jax.tree_util.tree_map(
      lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps),
      params, mu, nu)
  return params, {'count': t, 'mu': mu, 'nu': nu}
