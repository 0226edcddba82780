"""A decoder-only Transformer LM (pre-LayerNorm, learned positions), Adam.

Token embedding + learned position embedding, `layers` blocks of
LayerNorm -> causal multi-head self-attention -> residual, LayerNorm ->
Dense(mlp) -> gelu -> Dense -> residual, a final LayerNorm and an untied
output Dense over the vocabulary. `dtype` is the compute dtype (parameters
stay float32). Synthetic tokens; loss is next-token cross-entropy.
"""
import jax
import jax.numpy as jnp

from flaxish import nn
from flaxish import optim
from benchmarks.workloads import flaxish_impl, plain, plain_impl
from benchmarks.workloads.base import Workload, have_flax

PRESETS = {
    'tiny': dict(batch=2, length=8, vocab=32, emb=16, heads=2, mlp=32,
                 layers=2),
    'cpu': dict(batch=4, length=128, vocab=2048, emb=128, heads=4, mlp=512,
                layers=2),
    'gpu': dict(batch=16, length=1024, vocab=32000, emb=768, heads=12,
                mlp=3072, layers=12, dtype='bfloat16'),
}
LEARNING_RATE = 1e-3
POS_INIT_STD = 0.02


def train_flops(batch, length, vocab, emb, mlp, layers, **unused):
  """Matmul FLOPs of one train step (3x the forward pass).

  Forward, per layer: the q, k, v and output projections (8 T d^2), the MLP
  (4 T d mlp) and the two attention products q k^T and w v over the full
  `length x length` square that is computed (4 B L^2 d); plus the output
  layer (2 T d vocab). T = batch * length tokens. Element-wise work
  (LayerNorm, softmax, gelu, Adam) is not counted.
  """
  del unused
  t = batch * length
  per_layer = 8 * t * emb**2 + 4 * t * emb * mlp + 4 * batch * length**2 * emb
  return 3 * (layers * per_layer + 2 * t * emb * vocab)


# ------------------------------------------------------------------ flaxish --

class Block(nn.Module):
  """A pre-LayerNorm decoder block."""

  def apply(self, x, heads, mlp, dtype):
    y = nn.LayerNorm(x, dtype=dtype, name='ln1')
    y = nn.SelfAttention(y, num_heads=heads, causal_mask=True, dtype=dtype,
                         name='attn')
    x = x + y
    y = nn.LayerNorm(x, dtype=dtype, name='ln2')
    y = nn.gelu(nn.Dense(y, mlp, dtype=dtype, name='mlp_in'))
    return x + nn.Dense(y, x.shape[-1], dtype=dtype, name='mlp_out')


class DecoderLM(nn.Module):
  """Tokens `[batch, length]` -> logits `[batch, length, vocab]`."""

  def apply(self, tokens, vocab, emb, heads, mlp, layers, max_len,
            dtype=jnp.float32):
    x = nn.Embed(tokens, vocab, emb, dtype=dtype, name='embed')
    pos = self.param('pos_embedding', (max_len, emb),
                     nn.initializers.normal(POS_INIT_STD))
    x = x + jnp.asarray(pos[None, :tokens.shape[1]], dtype)
    for i in range(layers):
      x = Block(x, heads, mlp, dtype, name=f'block_{i}')
    x = nn.LayerNorm(x, dtype=dtype, name='final_ln')
    return nn.Dense(x, vocab, dtype=dtype, name='head')


# ---------------------------------------------------------------- plain JAX --

def plain_init(rng, vocab, emb, heads, mlp, layers, max_len, dtype=None):
  del dtype
  keys = iter(jax.random.split(rng, 4 * layers + 3))
  params = {'embed': {'embedding': plain.embed_normal(next(keys),
                                                      (vocab, emb))},
            'pos_embedding': POS_INIT_STD * jax.random.normal(
                next(keys), (max_len, emb))}
  for i in range(layers):
    params[f'block_{i}'] = {
        'ln1': plain.norm_init(emb), 'ln2': plain.norm_init(emb),
        'attn': plain.attention_init(next(keys), emb, heads),
        'mlp_in': plain.dense_init(next(keys), emb, mlp),
        'mlp_out': plain.dense_init(next(keys), mlp, emb)}
  params['final_ln'] = plain.norm_init(emb)
  params['head'] = plain.dense_init(next(keys), emb, vocab)
  return params, {}


def plain_apply(params, stats, tokens, train, layers, dtype=jnp.float32,
                **unused):
  del train, unused
  x = params['embed']['embedding'].astype(dtype)[tokens]
  x = x + params['pos_embedding'][None, :tokens.shape[1]].astype(dtype)
  for i in range(layers):
    p = params[f'block_{i}']
    y = plain.causal_self_attention(p['attn'], plain.layer_norm(p['ln1'], x),
                                    dtype)
    x = x + y
    y = jax.nn.gelu(plain.dense(p['mlp_in'], plain.layer_norm(p['ln2'], x),
                                dtype))
    x = x + plain.dense(p['mlp_out'], y, dtype)
  x = plain.layer_norm(params['final_ln'], x)
  return plain.dense(params['head'], x, dtype), stats


# -------------------------------------------------------------------- Linen --

def linen_impl(arch, spec):
  """The Linen + optax `Impl` (imports flax)."""
  import flax.linen as ln  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from benchmarks.workloads import linen_impl as impl
  dtype = arch['dtype']

  class LinenBlock(ln.Module):

    @ln.compact
    def __call__(self, x):
      mask = ln.make_causal_mask(jnp.ones(x.shape[:2]))
      y = ln.LayerNorm(dtype=dtype, name='ln1')(x)
      y = ln.MultiHeadDotProductAttention(arch['heads'], dtype=dtype,
                                          deterministic=True,
                                          name='attn')(y, mask=mask)
      x = x + y
      y = ln.LayerNorm(dtype=dtype, name='ln2')(x)
      y = ln.gelu(ln.Dense(arch['mlp'], dtype=dtype, name='mlp_in')(y))
      return x + ln.Dense(x.shape[-1], dtype=dtype, name='mlp_out')(y)

  class LinenLM(ln.Module):

    @ln.compact
    def __call__(self, tokens):
      x = ln.Embed(arch['vocab'], arch['emb'], dtype=dtype,
                   name='embed')(tokens)
      pos = self.param('pos_embedding',
                       ln.initializers.normal(POS_INIT_STD),
                       (arch['max_len'], arch['emb']))
      x = x + jnp.asarray(pos[None, :tokens.shape[1]], dtype)
      for i in range(arch['layers']):
        x = LinenBlock(name=f'block_{i}')(x)
      x = ln.LayerNorm(dtype=dtype, name='final_ln')(x)
      return ln.Dense(arch['vocab'], dtype=dtype, name='head')(x)

  return impl.make_impl(LinenLM(), spec, optax.adam(LEARNING_RATE))


def make(batch=8, length=128, vocab=8192, emb=256, heads=4, mlp=1024,
         layers=4, dtype='float32') -> Workload:
  """The LM at the given sizes; `dtype` is the compute dtype's name."""
  arch = dict(vocab=vocab, emb=emb, heads=heads, mlp=mlp, layers=layers,
              max_len=length, dtype=jnp.dtype(dtype))
  spec = ((batch, length), jnp.int32)

  def make_batch(rng):
    return {'x': jax.random.randint(rng, (batch, length), 0, vocab),
            'y': jax.random.randint(jax.random.fold_in(rng, 1),
                                    (batch, length), 0, vocab)}

  impls = {
      'flaxish': lambda: flaxish_impl.make_impl(
          DecoderLM.partial(**arch), spec, optim.Adam(LEARNING_RATE)),
      'plain_jax': lambda: plain_impl.make_impl(
          lambda rng: plain_init(rng, **arch),
          lambda p, s, x, train: plain_apply(p, s, x, train, **arch),
          plain_impl.adam(LEARNING_RATE)),
  }
  if have_flax():
    impls['linen'] = lambda: linen_impl(arch, spec)
  title = (f'Transformer LM, {layers} layers, emb {emb}, {heads} heads, '
           f'mlp {mlp}, vocab {vocab}, batch {batch} x {length} tokens, '
           f'{dtype}, Adam')
  config = dict(batch=batch, length=length, vocab=vocab, emb=emb, heads=heads,
                mlp=mlp, layers=layers, dtype=str(dtype))
  # Adam's first update is about lr * sign(gradient): gradients that are ~0
  # up to rounding flip sign between implementations, so the update check
  # is looser than for Momentum; the loss check stays tight.
  low = jnp.dtype(dtype) != jnp.float32
  tolerance = {'loss': 2e-2 if low else 1e-5, 'update': 0.25 if low else 0.05,
               'stats': 0.}
  return Workload('transformer_lm', title, config, make_batch, impls,
                  batch * length, 'tokens',
                  train_flops(batch, length, vocab, emb, mlp, layers),
                  tolerance)
