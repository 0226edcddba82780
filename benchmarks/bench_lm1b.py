"""Benchmark: tokens/s of the lm1b train step, flaxish vs plain JAX.

The flaxish side is the example itself: `examples.lm1b.train.train_step`
(the `TransformerLM` of models.py, Adam with weight decay, the warmup /
rsqrt learning rate, dropout through `nn.stochastic`, metrics), under
`jax.pmap` on one device. The plain side is the same Transformer and the same
step written by hand in JAX below: its own init and apply on a dict of
arrays, einsum attention, the same dropout rngs, Adam written out.

Before timing, both sides take one step from the same parameters and the
same dropout rng, and the losses and updated parameters are compared (the
dropout masks are drawn identically, so they agree to float rounding).

The two sides run in interleaved rounds (flaxish, plain, plain, flaxish,
...), `--steps` steps per round on one packed batch kept on the device;
reported: the median tokens/s of each side (non-padding tokens), their
ratio (flaxish / plain; goal >= 0.98), and the range of the per-round
ratios.

  PYTHONPATH=. python benchmarks/bench_lm1b.py           # the 2020 model
  PYTHONPATH=. python benchmarks/bench_lm1b.py --small   # the kjv model

Not a test: nothing is asserted. Results go in benchmarks/RESULTS_lm1b.md.
"""
import argparse
import functools
import platform
import statistics
import sys
import time

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxish import jax_utils
from examples.lm1b import train

# The 2020 lm1b model (vocab: subwords32k), and the README's CPU model.
CONFIGS = {
    'full': dict(vocab_size=32000, emb_dim=512, num_heads=8, num_layers=6,
                 qkv_dim=512, mlp_dim=2048, length=256, batch_size=32),
    'small': dict(vocab_size=2048, emb_dim=128, num_heads=4, num_layers=2,
                  qkv_dim=128, mlp_dim=512, length=128, batch_size=32),
}
ADAM = dict(beta1=0.9, beta2=0.98, eps=1e-9, weight_decay=0.1)


# ---- the same model and train step in plain JAX ----------------------------

def plain_init(key, cfg):
  """Parameters with the initializers of models.py, as a flat-ish dict."""
  emb, heads = cfg['emb_dim'], cfg['num_heads']
  head_dim, mlp = cfg['qkv_dim'] // heads, cfg['mlp_dim']
  xavier = jax.nn.initializers.xavier_uniform()
  tiny = jax.nn.initializers.normal(1e-6)
  keys = iter(jax.random.split(key, 1 + 8 * cfg['num_layers']))
  params = {'embed': jax.random.normal(next(keys), (cfg['vocab_size'], emb)),
            'final_norm': (jnp.ones(emb), jnp.zeros(emb)), 'layers': []}
  for _ in range(cfg['num_layers']):
    qkv = functools.partial(xavier, shape=(emb, heads, head_dim))
    params['layers'].append({
        'norm1': (jnp.ones(emb), jnp.zeros(emb)),
        'query': qkv(next(keys)), 'key': qkv(next(keys)),
        'value': qkv(next(keys)),
        'out': xavier(next(keys), (heads, head_dim, emb)),
        'norm2': (jnp.ones(emb), jnp.zeros(emb)),
        'w1': xavier(next(keys), (emb, mlp)), 'b1': tiny(next(keys), (mlp,)),
        'w2': xavier(next(keys), (mlp, emb)),
        'b2': tiny(next(keys), (emb,))})
  return params


def from_flaxish(params):
  """The flaxish TransformerLM parameters in `plain_init`'s layout."""
  def norm(p):
    return (p['scale'], p['bias'])
  layers = []
  for i in range(sum(k.startswith('decoder_block_') for k in params)):
    block = params[f'decoder_block_{i}']
    attn, mlp = block['self_attention'], block['mlp']
    layers.append({
        'norm1': norm(block['pre_attention_norm']),
        'query': attn['query']['kernel'], 'key': attn['key']['kernel'],
        'value': attn['value']['kernel'], 'out': attn['out']['kernel'],
        'norm2': norm(block['pre_mlp_norm']),
        'w1': mlp['Dense_0']['kernel'], 'b1': mlp['Dense_0']['bias'],
        'w2': mlp['Dense_1']['kernel'], 'b2': mlp['Dense_1']['bias']})
  return {'embed': params['embed']['embedding'],
          'final_norm': norm(params['decoder_norm']), 'layers': layers}


def layer_norm(x, scale_bias, eps=1e-6):
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.mean(jnp.square(x), -1, keepdims=True) - jnp.square(mean)
  return (x - mean) * lax.rsqrt(jnp.maximum(var, 0.) + eps) * scale_bias[0] + (
      scale_bias[1])


def plain_forward(params, tokens, segmentation, positions, rng, rate):
  """Logits [batch, length, vocab]; dropout with `rate` (0: none).

  Dropout keys are `fold_in(rng, 1), fold_in(rng, 2), ...` in the order of
  use, as `nn.make_rng()` hands them out.
  """
  count = [0]

  def next_rng():
    count[0] += 1
    return jax.random.fold_in(rng, count[0])

  def dropout(x):
    if not rate:
      return x
    keep = jax.random.bernoulli(next_rng(), 1. - rate, x.shape)
    return lax.select(keep, x / (1. - rate), jnp.zeros_like(x))

  emb_dim = params['embed'].shape[1]
  previous = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
  inputs = jnp.where(segmentation == previous,
                     jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1], 0)
  half = emb_dim // 2
  timescales = np.exp(-np.log(10000.) * np.arange(half) / max(half - 1, 1))
  angles = positions[..., None].astype(jnp.float32) * timescales
  x = params['embed'][inputs] + jnp.concatenate(
      [jnp.sin(angles), jnp.cos(angles)], -1)
  x = dropout(x)
  length = tokens.shape[1]
  causal = jnp.arange(length)[:, None] >= jnp.arange(length)[None, :]
  same = segmentation[:, :, None] == segmentation[:, None, :]
  bias = jnp.where(causal & same, 0., -1e10)[:, None]  # [b, 1, q, k]
  for layer in params['layers']:
    y = layer_norm(x, layer['norm1'])
    q = jnp.einsum('ble,ehd->blhd', y, layer['query'])
    k = jnp.einsum('ble,ehd->blhd', y, layer['key'])
    v = jnp.einsum('ble,ehd->blhd', y, layer['value'])
    q = q / np.sqrt(q.shape[-1]).astype(np.float32)
    weights = jax.nn.softmax(jnp.einsum('bqhd,bkhd->bhqk', q, k) + bias)
    if rate:
      keep = jax.random.bernoulli(next_rng(), 1. - rate, weights.shape)
      weights = weights * (keep.astype(jnp.float32) / (1. - rate))
    y = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
    y = dropout(jnp.einsum('bqhd,hde->bqe', y, layer['out']))
    x = x + y
    y = layer_norm(x, layer['norm2'])
    y = dropout(jax.nn.relu(y @ layer['w1'] + layer['b1']))
    x = x + dropout(y @ layer['w2'] + layer['b2'])
  x = layer_norm(x, params['final_norm'])
  return (x @ params['embed'].T) / np.sqrt(emb_dim)


def plain_train_step(state, batch, dropout_rng, learning_rate_fn, rate):
  """The example's train step, by hand: loss, pmean, Adam, metrics."""
  params, mu, nu, step = state
  rng = jax.random.fold_in(jax.random.fold_in(dropout_rng, step),
                           lax.axis_index('batch'))
  tokens, segmentation = batch['tokens'], batch['segmentation']
  weights = (segmentation > 0).astype(jnp.float32)

  def loss_fn(params):
    logits = plain_forward(params, tokens, segmentation, batch['positions'],
                           rng, rate)
    log_probs = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(log_probs, tokens[..., None], -1)[..., 0]
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.), (
        logits, jnp.sum(nll * weights))

  (_, (logits, loss_sum)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(params)
  grads = lax.pmean(grads, 'batch')
  lr = learning_rate_fn(step)
  b1, b2, eps, wd = (ADAM[k] for k in ('beta1', 'beta2', 'eps',
                                       'weight_decay'))
  t = step + 1
  mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1. - b1) * g, mu, grads)
  nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1. - b2) * g * g, nu,
                              grads)
  params = jax.tree_util.tree_map(
      lambda p, m, v: p - lr * (m / (1. - b1**t)) / (
          jnp.sqrt(v / (1. - b2**t)) + eps) - lr * wd * p, params, mu, nu)
  correct = jnp.sum((jnp.argmax(logits, -1) == tokens) * weights)
  metrics = lax.psum({'loss': loss_sum, 'correct': correct,
                      'tokens': jnp.sum(weights)}, 'batch')
  metrics['learning_rate'] = lr
  return (params, mu, nu, step + 1), metrics


# ---- the benchmark ---------------------------------------------------------

def packed_batch(cfg, seed=0):
  """One batch of rows packed with 'sentences' of 8-60 tokens."""
  rng = np.random.default_rng(seed)
  shape = (cfg['batch_size'], cfg['length'])
  batch = {k: np.zeros(shape, np.int32)
           for k in ('tokens', 'segmentation', 'positions')}
  for row in range(shape[0]):
    start, segment = 0, 1
    while True:
      n = int(rng.integers(8, 61))
      if start + n > shape[1]:
        break
      batch['tokens'][row, start:start + n] = rng.integers(
          3, cfg['vocab_size'], n)
      batch['segmentation'][row, start:start + n] = segment
      batch['positions'][row, start:start + n] = np.arange(n)
      start, segment = start + n, segment + 1
  return batch


def build(cfg, rate, device):
  """The two train steps, their states and the batch, on `device`."""
  model_kwargs = {k: cfg[k] for k in ('vocab_size', 'emb_dim', 'num_heads',
                                      'num_layers', 'qkv_dim', 'mlp_dim')}
  model, _ = train.create_model(jax.random.PRNGKey(0), cfg['length'],
                                dict(model_kwargs, dropout_rate=rate,
                                     attention_dropout_rate=rate))
  optimizer = train.create_optimizer(model, ADAM['weight_decay'])
  lr_fn = train.create_learning_rate_scheduler(0.05, 100)
  devices = [device]
  flaxish_step = jax.pmap(
      functools.partial(train.train_step, learning_rate_fn=lr_fn),
      axis_name='batch', devices=devices, donate_argnums=(0,))
  plain_step = jax.pmap(
      functools.partial(plain_train_step, learning_rate_fn=lr_fn, rate=rate),
      axis_name='batch', devices=devices, donate_argnums=(0,))
  params = from_flaxish(model.params)
  shapes = lambda tree: jax.tree_util.tree_map(jnp.shape, tree)
  if shapes(params) != shapes(plain_init(jax.random.PRNGKey(0), cfg)):
    raise AssertionError('the plain JAX model has other parameter shapes '
                         'than the flaxish one')
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  plain_state = (params, zeros, zeros, jnp.zeros((), jnp.int32))
  rep = functools.partial(jax_utils.replicate, devices=devices)
  batch = rep(packed_batch(cfg))
  return (flaxish_step, rep(optimizer)), (plain_step, rep(plain_state)), (
      batch, rep(jax.random.PRNGKey(1)))


def check_same_step(flaxish, plain, data):
  """One step of each from the same params: max relative differences."""
  (f_step, f_opt), (p_step, p_state), (batch, rng) = flaxish, plain, data
  f_opt = jax.tree_util.tree_map(jnp.copy, f_opt)
  p_state = jax.tree_util.tree_map(jnp.copy, p_state)
  f_opt, f_metrics = f_step(f_opt, batch, rng)
  p_state, p_metrics = p_step(p_state, batch, rng)
  loss_diff = abs(float(f_metrics['loss'][0]) - float(p_metrics['loss'][0]))
  loss_diff /= abs(float(p_metrics['loss'][0]))
  f_params = jax.tree_util.tree_leaves(from_flaxish(f_opt.target.params))
  p_params = jax.tree_util.tree_leaves(p_state[0])
  param_diff = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) +
                                                    1e-12))
                   for a, b in zip(f_params, p_params))
  return loss_diff, param_diff


def compiled_cost(step, state, data):
  """XLA's count of flops and of instructions in the optimized program."""
  compiled = step.lower(state, *data).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  text = compiled.as_text()
  instructions = sum(1 for line in text.splitlines() if ' = ' in line)
  return float(cost.get('flops', float('nan'))), instructions


def time_round(step, state, data, steps):
  batch, rng = data
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = step(state, batch, rng)
    if i % 8 == 7:
      jax.block_until_ready(metrics)
  jax.block_until_ready((state, metrics))
  return state, (time.perf_counter() - start) / steps


def run(name, cfg, rate, rounds, steps):
  device = jax.local_devices()[0]
  flaxish, plain, data = build(cfg, rate, device)
  loss_diff, param_diff = check_same_step(flaxish, plain, data)
  f_flops, f_ops = compiled_cost(*flaxish, data)
  p_flops, p_ops = compiled_cost(*plain, data)
  tokens = int(np.sum(np.asarray(data[0]['segmentation']) > 0))
  (f_step, f_state), (p_step, p_state) = flaxish, plain
  f_state, _ = time_round(f_step, f_state, data, 2)  # compile and warm up
  p_state, _ = time_round(p_step, p_state, data, 2)
  f_times, p_times = [], []
  for r in range(rounds):
    order = ('f', 'p') if r % 2 == 0 else ('p', 'f')
    for side in order:
      if side == 'f':
        f_state, t = time_round(f_step, f_state, data, steps)
        f_times.append(t)
      else:
        p_state, t = time_round(p_step, p_state, data, steps)
        p_times.append(t)
  ratios = [p / f for f, p in zip(f_times, p_times)]
  f_tps = tokens / statistics.median(f_times)
  p_tps = tokens / statistics.median(p_times)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(
      from_flaxish(jax_utils.unreplicate(f_state.target.params))))
  return (f'| {name} | {n_params / 1e6:.1f} M | {rate} | '
          f'{cfg["batch_size"]}x{cfg["length"]} ({tokens}) | {f_tps:,.0f} | '
          f'{p_tps:,.0f} | {f_tps / p_tps:.3f} | '
          f'{min(ratios):.3f}-{max(ratios):.3f} | {loss_diff:.1e} / '
          f'{param_diff:.1e} | {f_flops / 1e9:.2f} / {p_flops / 1e9:.2f} | '
          f'{f_ops} / {p_ops} |')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--small', action='store_true',
                      help="the README's kjv model instead of the 2020 one")
  parser.add_argument('--batch_size', type=int, default=None,
                      help='rows per step (default: the config\'s)')
  parser.add_argument('--dropout', default='0.1,0.0',
                      help='dropout rates to run, comma-separated')
  parser.add_argument('--rounds', type=int, default=7,
                      help='interleaved timing rounds per side')
  parser.add_argument('--steps', type=int, default=10,
                      help='train steps per round')
  args = parser.parse_args(argv)
  name = 'small' if args.small else 'full'
  cfg = dict(CONFIGS[name])
  if args.batch_size:
    cfg['batch_size'] = args.batch_size
  print(f'jax {jax.__version__}, Python {platform.python_version()}, '
        f'{jax.local_devices()[0].device_kind} ({jax.default_backend()}), '
        f'{args.rounds} rounds x {args.steps} steps', file=sys.stderr)
  print('| model | params | dropout | batch (tokens) | flaxish tokens/s | '
        'plain JAX tokens/s | ratio | per-round ratios | check: loss / '
        'params rel. diff | XLA GFLOP/step flaxish / plain | HLO '
        'instructions flaxish / plain |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for rate in (float(r) for r in args.dropout.split(',')):
    print(run(name, cfg, rate, args.rounds, args.steps), flush=True)


if __name__ == '__main__':
  main()
