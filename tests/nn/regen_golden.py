"""The golden table of the layers' parameter (and state) layouts.

`tests/nn/test_golden_params.py` checks that every layer still creates the
parameters recorded in `tests/nn/golden/param_trees.json` (names, shapes,
dtypes), so a layout never changes by accident: checkpoints depend on it.
After an intended layout change, regenerate the file and commit it:

    .venv/bin/python -m tests.nn.regen_golden

Layouts are computed with `jax.eval_shape`, so nothing is initialized.
"""
import json
import os
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from flaxish import nn

GOLDEN_PATH = os.path.join(os.path.dirname(__file__), 'golden',
                           'param_trees.json')
REGEN_COMMAND = '.venv/bin/python -m tests.nn.regen_golden'

_KEY = jax.random.PRNGKey(0)
f32, i32 = jnp.float32, jnp.int32


def _s(shape, dtype=f32):
  return jax.ShapeDtypeStruct(shape, dtype)


# A case is `(fn, abstract_inputs)`; `fn(*inputs)` returns a dict of
# sections ('params', 'state', 'cache') to record.
Case = Tuple[Callable[..., Dict[str, Any]], Tuple[Any, ...]]


def _init(module, *inputs, **kwargs) -> Case:
  """A case: `module.init` on abstract inputs; reports its params."""

  def run(*inputs):
    _, params = module.init(_KEY, *inputs, **kwargs)
    return {'params': params}

  return run, inputs


def _stateful(module, *inputs, **kwargs) -> Case:
  """A case that also reports the `nn.stateful()` state made at init."""

  def run(*inputs):
    with nn.stateful() as state:
      _, params = module.init(_KEY, *inputs, **kwargs)
    return {'params': params, 'state': state.as_dict()}

  return run, inputs


def _attention_with_cache(x):
  with nn.attention.Cache().mutate() as cache_def:
    _, params = nn.SelfAttention.init(_KEY, x, num_heads=3, causal_mask=True,
                                      cache=cache_def)
  cache = cache_def.initialize_cache(x.shape[:2])
  return {'params': params, 'cache': cache.as_dict()}


class _SmallCNN(nn.Module):
  """Pins the default child names (`ClassName_k`, one counter per parent)."""

  def apply(self, x):
    x = nn.Conv(x, 4, (3, 3))
    x = nn.BatchNorm(x)
    x = nn.avg_pool(nn.relu(x), (2, 2), (2, 2))
    x = nn.dropout(x, 0.5, deterministic=True)
    x = nn.Dense(x.reshape((x.shape[0], -1)), 8)
    x = nn.LayerNorm(x)
    return nn.Dense(x, 2)


CASES: Dict[str, Case] = {
    'Dense': _init(nn.Dense, _s((2, 5)), features=3),
    'Dense/no_bias': _init(nn.Dense, _s((2, 5)), features=3, bias=False),
    'Dense/bf16_params': _init(nn.Dense, _s((2, 5)), features=3,
                               dtype=jnp.bfloat16, param_dtype=jnp.bfloat16),
    'DenseGeneral/axes': _init(nn.DenseGeneral, _s((2, 3, 4)),
                               features=(5, 6), axis=(1, 2)),
    'DenseGeneral/batch_dims': _init(nn.DenseGeneral, _s((2, 3, 4)),
                                     features=5, batch_dims=0),
    'Conv/1d': _init(nn.Conv, _s((2, 8, 3)), features=4, kernel_size=(3,)),
    'Conv/2d_groups': _init(nn.Conv, _s((2, 8, 8, 4)), features=6,
                            kernel_size=(3, 3), feature_group_count=2),
    'Conv/3d': _init(nn.Conv, _s((1, 4, 4, 4, 2)), features=3,
                     kernel_size=(2, 2, 2)),
    'ConvTranspose/2d': _init(nn.ConvTranspose, _s((2, 4, 4, 3)), features=5,
                              kernel_size=(3, 3), strides=(2, 2)),
    'Embed': _init(nn.Embed, _s((2, 7), i32), num_embeddings=11, features=4),
    'BatchNorm': _stateful(nn.BatchNorm, _s((4, 6))),
    'BatchNorm/axis_1': _stateful(nn.BatchNorm, _s((2, 3, 5)), axis=1),
    'LayerNorm': _init(nn.LayerNorm, _s((2, 6))),
    'GroupNorm': _init(nn.GroupNorm, _s((2, 4, 4, 8)), num_groups=4),
    'MultiHeadDotProductAttention': _init(
        nn.MultiHeadDotProductAttention, _s((2, 5, 6)), _s((2, 7, 4)),
        num_heads=2, qkv_features=8, out_features=3),
    'SelfAttention/cache': (_attention_with_cache, (_s((2, 5, 6)),)),
    'LSTMCell': _init(nn.LSTMCell, (_s((2, 4)), _s((2, 4))), _s((2, 3))),
    'GRUCell': _init(nn.GRUCell, _s((2, 4)), _s((2, 3))),
    'ConvLSTM': _init(nn.ConvLSTM, (_s((2, 4, 4, 3)), _s((2, 4, 4, 3))),
                      _s((2, 4, 4, 2)), features=3, kernel_size=(3, 3)),
    'SmallCNN': _stateful(_SmallCNN, _s((2, 8, 8, 1))),
}


def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def layout(case: Case) -> Dict[str, Dict[str, str]]:
  """`{section: {'/path/to/leaf': 'dtype[shape]'}}` of one case."""
  fn, inputs = case
  trees = jax.eval_shape(fn, *inputs)
  out = {}
  for section, tree in trees.items():
    flat = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      parts = (_key_name(k).strip('/') for k in path)
      name = '/' + '/'.join(p for p in parts if p)
      flat[name] = f'{jnp.dtype(leaf.dtype).name}{list(leaf.shape)}'
    out[section] = dict(sorted(flat.items()))
  return out


def compute_table() -> Dict[str, Dict[str, Dict[str, str]]]:
  return {name: layout(case) for name, case in CASES.items()}


def main() -> None:
  table = compute_table()
  os.makedirs(os.path.dirname(GOLDEN_PATH), exist_ok=True)
  with open(GOLDEN_PATH, 'w') as f:
    json.dump(table, f, indent=1, sort_keys=True)
    f.write('\n')
  print(f'wrote {len(table)} layouts to {GOLDEN_PATH}')


if __name__ == '__main__':
  main()
