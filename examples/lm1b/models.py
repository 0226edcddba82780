"""A decoder-only Transformer language model (the 2020 lm1b model).

Token ids go in, next-token logits come out. Sequences may be packed: several
sentences share a row, told apart by `segmentation` ids (0 = padding), with
`positions` restarting at 0 for each sentence. Tokens attend only to earlier
tokens of their own sentence.

For sampling, the model runs one position at a time with an attention
`Cache` (`shift=False`, `cache=...`, explicit `positions`), which gives the
same logits as the full pass.
"""
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np

from flaxish import nn

Array = Any


def shift_right(x: Array, segmentation: Optional[Array] = None) -> Array:
  """Shifts `x` [batch, length] right by one, filling with 0 (the start token).

  With `segmentation`, the first token of every packed sentence also gets a 0
  instead of the last token of the sentence before it.
  """
  shifted = jnp.pad(x, ((0, 0), (1, 0)))[:, :-1]
  if segmentation is not None:
    previous = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
    shifted = jnp.where(segmentation == previous, shifted, 0)
  return shifted


def sinusoidal_position_embedding(positions: Array, features: int) -> Array:
  """Fixed sin/cos embeddings of integer `positions`, [..., features]."""
  half = features // 2
  timescales = np.exp(-np.log(10000.) * np.arange(half) / max(half - 1, 1))
  angles = positions[..., None].astype(jnp.float32) * timescales
  embedding = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  if features % 2:
    embedding = jnp.pad(embedding, [(0, 0)] * (embedding.ndim - 1) + [(0, 1)])
  return embedding


class MlpBlock(nn.Module):
  """Dense(mlp_dim)-relu-dropout-Dense(features)-dropout."""

  def apply(self, x, mlp_dim, dropout_rate=0.1, deterministic=False):
    features = x.shape[-1]
    y = nn.Dense(x, mlp_dim, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6))
    y = nn.relu(y)
    y = nn.dropout(y, rate=dropout_rate, deterministic=deterministic)
    y = nn.Dense(y, features, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(stddev=1e-6))
    return nn.dropout(y, rate=dropout_rate, deterministic=deterministic)


class DecoderBlock(nn.Module):
  """Pre-LayerNorm causal self-attention and MLP, each with a residual."""

  def apply(self, x, qkv_dim, mlp_dim, num_heads, segmentation=None,
            cache=None, dropout_rate=0.1, attention_dropout_rate=0.1,
            deterministic=False):
    y = nn.LayerNorm(x, name='pre_attention_norm')
    y = nn.SelfAttention(
        y, num_heads=num_heads, qkv_features=qkv_dim, causal_mask=True,
        segmentation=segmentation, cache=cache,
        kernel_init=nn.initializers.xavier_uniform(), bias=False,
        broadcast_dropout=False, dropout_rate=attention_dropout_rate,
        deterministic=deterministic, name='self_attention')
    y = nn.dropout(y, rate=dropout_rate, deterministic=deterministic)
    x = x + y
    y = nn.LayerNorm(x, name='pre_mlp_norm')
    y = MlpBlock(y, mlp_dim=mlp_dim, dropout_rate=dropout_rate,
                 deterministic=deterministic, name='mlp')
    return x + y


class TransformerLM(nn.Module):
  """Transformer decoder language model.

  Input: int32 token ids [batch, length]. Output: float32 logits
  [batch, length, vocab_size]; position `t` predicts token `t` of `inputs`
  from tokens `< t` (the inputs are shifted right inside, unless `shift` is
  False, as when decoding one token at a time).
  """

  def apply(self, inputs, vocab_size, positions=None, segmentation=None,
            emb_dim=512, num_heads=8, num_layers=6, qkv_dim=512, mlp_dim=2048,
            dropout_rate=0.1, attention_dropout_rate=0.1, train=False,
            shift=True, cache=None):
    if inputs.ndim != 2:
      raise ValueError(f'TransformerLM expects token ids [batch, length], got '
                       f'shape {inputs.shape}')
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
    if shift:
      inputs = shift_right(inputs, segmentation)
    embed = nn.Embed.shared(num_embeddings=vocab_size, features=emb_dim,
                            embedding_init=nn.initializers.normal(1.0),
                            name='embed')
    x = embed(inputs.astype(jnp.int32))
    x = x + sinusoidal_position_embedding(positions, emb_dim)
    x = nn.dropout(x, rate=dropout_rate, deterministic=not train)
    for i in range(num_layers):
      x = DecoderBlock(x, qkv_dim=qkv_dim, mlp_dim=mlp_dim,
                       num_heads=num_heads, segmentation=segmentation,
                       cache=cache, dropout_rate=dropout_rate,
                       attention_dropout_rate=attention_dropout_rate,
                       deterministic=not train, name=f'decoder_block_{i}')
    x = nn.LayerNorm(x, name='decoder_norm')
    # Output logits share the input embedding; the 1/sqrt(emb_dim) keeps
    # them O(1) with the unit-variance table.
    return embed.attend(x) / np.sqrt(emb_dim)
