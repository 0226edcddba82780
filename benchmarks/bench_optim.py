"""Benchmark: jitted `Optimizer.apply_gradient` against optax, same process.

Times one update of Adam and of Momentum on a ResNet-50-sized and a
Transformer-sized parameter tree (float32), flaxish vs `optax.adam` /
`optax.sgd(momentum=0.9)`, in two modes:

- `step`: one jitted update per call, state donated, as in a training loop.
  Includes the per-call dispatch (flattening the optimizer pytree, passing
  hundreds of arrays); on a fast GPU this overhead dominates the update.
- `device`: `--steps` updates inside one jitted `lax.fori_loop`, so only the
  compiled update itself is timed.

The two sides run interleaved (flaxish, optax, flaxish, ...) so that load on
the machine affects both alike; the ratio of the medians is reported.

  .venv/bin/python benchmarks/bench_optim.py            # all cases
  .venv/bin/python benchmarks/bench_optim.py --rounds=5 --steps=5 --modes=step

Not a test: nothing is asserted. Results go in benchmarks/RESULTS_optim.md.
"""
import argparse
import platform
import statistics
import sys
import time

import jax
from jax import lax
import jax.numpy as jnp
import optax

from flaxish import optim


def resnet50_params():
  """The parameter shapes of ResNet-50 v1 (25.6 M parameters, 161 leaves)."""
  params = {'conv_init': {'kernel': (7, 7, 3, 64)},
            'bn_init': {'scale': (64,), 'bias': (64,)}}
  features_in, block = 64, 0
  for stage, (n_blocks, width) in enumerate(zip([3, 4, 6, 3],
                                                [64, 128, 256, 512])):
    for i in range(n_blocks):
      p = {}
      shapes = [(1, 1, features_in, width), (3, 3, width, width),
                (1, 1, width, 4 * width)]
      for j, shape in enumerate(shapes):
        p[f'Conv_{j}'] = {'kernel': shape}
        p[f'BatchNorm_{j}'] = {'scale': (shape[-1],), 'bias': (shape[-1],)}
      if i == 0:
        p['conv_proj'] = {'kernel': (1, 1, features_in, 4 * width)}
        p['norm_proj'] = {'scale': (4 * width,), 'bias': (4 * width,)}
      params[f'ResNetBlock_{block}'] = p
      features_in, block = 4 * width, block + 1
    del stage
  params['Dense_0'] = {'kernel': (2048, 1000), 'bias': (1000,)}
  return params


def transformer_params(vocab=32000, emb=512, heads=8, mlp=2048, layers=6):
  """The parameter shapes of the lm1b Transformer LM (about 35 M)."""
  head_dim = emb // heads
  params = {'embed': {'embedding': (vocab, emb)}}
  for i in range(layers):
    attn = {name: {'kernel': (emb, heads, head_dim)}
            for name in ('query', 'key', 'value')}
    attn['out'] = {'kernel': (heads, head_dim, emb)}
    params[f'encoderdecoderblock_{i}'] = {
        'LayerNorm_0': {'scale': (emb,), 'bias': (emb,)},
        'SelfAttention_0': attn,
        'LayerNorm_1': {'scale': (emb,), 'bias': (emb,)},
        'MlpBlock_0': {'Dense_0': {'kernel': (emb, mlp), 'bias': (mlp,)},
                       'Dense_1': {'kernel': (mlp, emb), 'bias': (emb,)}}}
  params['encoderdecoder_norm'] = {'scale': (emb,), 'bias': (emb,)}
  return params


def materialize(shapes, seed):
  leaves, treedef = jax.tree_util.tree_flatten(
      shapes, is_leaf=lambda x: isinstance(x, tuple))
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return treedef.unflatten([jax.random.normal(k, s, jnp.float32) * 0.01
                            for k, s in zip(keys, leaves)])


def flaxish_runner(opt_def, params, loop_steps=0):
  """Returns `run(grads)`: one update, or `loop_steps` in one computation."""
  opt = opt_def.create(jax.tree_util.tree_map(jnp.copy, params))
  if loop_steps:
    update = lambda opt, g: lax.fori_loop(
        0, loop_steps, lambda _, o: o.apply_gradient(g), opt)
  else:
    update = lambda opt, g: opt.apply_gradient(g)
  step = jax.jit(update, donate_argnums=0)
  state = [opt]

  def run(grads):
    state[0] = step(state[0], grads)
    return state[0]
  return run


def optax_runner(tx, params, loop_steps=0):
  """Returns `run(grads)`: one update, or `loop_steps` in one computation."""
  def one(p, s, g):
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s

  if loop_steps:
    update = lambda p, s, g: lax.fori_loop(
        0, loop_steps, lambda _, ps: one(*ps, g), (p, s))
  else:
    update = one
  step = jax.jit(update, donate_argnums=(0, 1))
  params = jax.tree_util.tree_map(jnp.copy, params)
  state = [params, tx.init(params)]

  def run(grads):
    state[0], state[1] = step(state[0], state[1], grads)
    return state
  return run


def time_steps(run, grads, steps):
  jax.block_until_ready(run(grads))
  start = time.perf_counter()
  for _ in range(steps):
    out = run(grads)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


CASES = {
    'adam': (lambda: optim.Adam(1e-3), lambda: optax.adam(1e-3)),
    'momentum': (lambda: optim.Momentum(0.1, beta=0.9),
                 lambda: optax.sgd(0.1, momentum=0.9)),
}
TREES = {'resnet50': resnet50_params, 'transformer': transformer_params}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trees', default='resnet50,transformer')
  parser.add_argument('--optimizers', default='adam,momentum')
  parser.add_argument('--modes', default='step,device')
  parser.add_argument('--rounds', type=int, default=7,
                      help='interleaved timing rounds per side')
  parser.add_argument('--steps', type=int, default=10,
                      help='updates per round')
  args = parser.parse_args(argv)

  print(f'jax {jax.__version__}, optax {optax.__version__}, Python '
        f'{platform.python_version()}, device: {jax.devices()[0].device_kind} '
        f'({jax.default_backend()})')
  print('| tree | params | leaves | optimizer | mode | flaxish ms | optax ms '
        '| ratio |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  for tree_name in args.trees.split(','):
    shapes = TREES[tree_name]()
    params = materialize(shapes, 0)
    grads = materialize(shapes, 1)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    n_leaves = len(jax.tree_util.tree_leaves(params))
    for opt_name in args.optimizers.split(','):
      make_def, make_tx = CASES[opt_name]
      for mode in args.modes.split(','):
        loop = args.steps if mode == 'device' else 0
        runs = {'flaxish': flaxish_runner(make_def(), params, loop),
                'optax': optax_runner(make_tx(), params, loop)}
        times = {name: [] for name in runs}
        for _ in range(args.rounds):
          for name, run in runs.items():
            if loop:
              times[name].append(time_steps(run, grads, 1) / loop)
            else:
              times[name].append(time_steps(run, grads, args.steps))
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f'| {tree_name} | {n_params / 1e6:.1f} M | {n_leaves} | '
              f'{opt_name} | {mode} | {med["flaxish"] * 1e3:.3f} | '
              f'{med["optax"] * 1e3:.3f} | '
              f'{med["flaxish"] / med["optax"]:.3f} |')
        sys.stdout.flush()
        del runs


if __name__ == '__main__':
  main()
