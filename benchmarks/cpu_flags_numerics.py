"""Numerics of XLA:CPU settings: training and gradients vs XLA's defaults.

    python -m benchmarks.cpu_flags_numerics            # ~10 min on 2 cores
    python -m benchmarks.cpu_flags_numerics --steps=50 \\
        --candidate ynn_off=--xla_cpu_experimental_ynn_fusion_type=

For each config (XLA's defaults, flaxish's CPU defaults, candidates), a
fresh process trains the hand-written JAX MNIST CNN (batch 128) and
CIFAR ResNet-18 with BatchNorm (width 16, batch 32) for `steps` steps on
four fixed synthetic batches, and computes the float32 gradient of the
loss at two points: the initial parameters and the parameters the
reference config (XLA's defaults) reached after training. A float64
process computes the same gradients in float64 (`JAX_ENABLE_X64`).

Training in float32 is chaotic: any rounding difference grows over the
steps. So a second run with XLA's defaults whose initial weights are each
changed by one rounding error (`reference_1ulp`) gives the yardstick: a
setting has float32-equal numerics when it moves the run no further from
the reference than that. Reported per config: the largest relative
difference of the loss to the reference's over the first 50 steps and the
largest absolute difference over all steps, the relative difference of the
final parameters (2-norm over all of them), and per workload the error of each gradient leaf against
float64, `|g - g64| / |g64|` (2-norms), the largest over leaves and the
largest over BatchNorm leaves. Writes
`benchmarks/results/cpu_flags/numerics.json` and
`benchmarks/RESULTS_cpu_flags_numerics.md`.
"""
import argparse
import json
import os
import tempfile
import time
from typing import Any, Dict

import numpy as np

from benchmarks import bench_cpu_flags

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_JSON = os.path.join(HERE, 'results', 'cpu_flags', 'numerics.json')
RESULTS_MD = os.path.join(HERE, 'RESULTS_cpu_flags_numerics.md')
OPT_OUT = bench_cpu_flags.OPT_OUT
SIZES = {'mnist_cnn': dict(batch=128),
         'resnet18': dict(batch=32, size=32, width=16)}
NUM_BATCHES = 4


def _flatten(tree, prefix=''):
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flatten(v, f'{prefix}{k}/'))
    return out
  return {prefix[:-1]: np.asarray(tree)}


def _unflatten(flat):
  tree = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split('/')
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _model(workload):
  """`(workload, apply)` with `apply(params, stats, x) -> (logits, stats)`."""
  from benchmarks import workloads  # pylint: disable=g-import-not-at-top
  from benchmarks.workloads import mnist_cnn, resnet  # pylint: disable=g-import-not-at-top
  w = workloads.build(workload, 'cpu', **SIZES[workload])
  if workload == 'mnist_cnn':
    return w, lambda p, s, x: mnist_cnn.plain_apply(p, s, x, True)
  arch = dict(resnet.ARCHS[workload], width=SIZES[workload]['width'])
  return w, lambda p, s, x: resnet.plain_apply(p, s, x, True, **arch)


def _loss_fn(apply):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def loss(params, stats, x, y):  # in the dtype of the inputs
    logits, _ = apply(params, stats, x)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], -1))
  return loss


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
  """Trains (float32) or only differentiates (float64) in this process."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from benchmarks.workloads import plain  # pylint: disable=g-import-not-at-top
  out = {'xla_flags': os.environ.get('XLA_FLAGS', '')}
  f64 = spec['float64']
  if f64:  # the workloads' Dense layers compute in float32 by default
    dense = plain.dense
    plain.dense = lambda p, x, dtype=jnp.float64: dense(p, x, dtype)
  for workload in SIZES:
    w, apply = _model(workload)
    tmp = os.path.join(spec['dir'], workload)
    if spec['reference']:  # batches and initial state, shared by all
      keys = jax.random.split(jax.random.PRNGKey(1), NUM_BATCHES)
      batches = [w.make_batch(k) for k in keys]
      params, stats = w.impls['plain_jax']().init(jax.random.PRNGKey(0),
                                                  batches[0])
      np.savez(tmp + '_init.npz', **_flatten({
          'params': params, 'stats': stats,
          'x': np.stack([b['x'] for b in batches]),
          'y': np.stack([b['y'] for b in batches])}))
    init = _unflatten(dict(np.load(tmp + '_init.npz')))
    cast = jnp.float64 if f64 else jnp.float32
    as_dtype = lambda t: jax.tree_util.tree_map(lambda a: jnp.asarray(a, cast),
                                                t)
    xs = [jnp.asarray(x, cast) for x in init['x']]
    ys = [jnp.asarray(y) for y in init['y']]
    fresh = lambda: (as_dtype(init['params']), as_dtype(init.get('stats', {})))
    params, stats = fresh()
    if spec.get('perturb'):  # the yardstick: one rounding error per weight
      params = jax.tree_util.tree_map(lambda a: a * (1 + 2.**-23), params)
    result = {}
    if not f64:
      impl = w.impls['plain_jax']()
      step = jax.jit(impl.train_step, donate_argnums=0)
      state = impl.make_state(params, stats)
      losses = []
      for i in range(spec['steps']):
        k = i % NUM_BATCHES
        state, loss = step(state, {'x': xs[k], 'y': ys[k]})
        losses.append(float(loss))
      result['losses'] = losses
      final = _flatten({'params': impl.params_of(state),
                        'stats': impl.stats_of(state)})
      np.savez(os.path.join(spec['dir'], f'{workload}_{spec["name"]}_final.npz'),
               **final)
      params, stats = fresh()  # the train state was donated
    grad = jax.jit(jax.grad(_loss_fn(apply)))
    points = {'init': (params, stats)}
    ref_final = os.path.join(spec['dir'], f'{workload}_reference_final.npz')
    if os.path.exists(ref_final):
      trained = _unflatten(dict(np.load(ref_final)))
      points['trained'] = (as_dtype(trained['params']),
                           as_dtype(trained.get('stats', {})))
    for point, (p, s) in points.items():
      g = grad(p, s, xs[0], ys[0])
      np.savez(os.path.join(spec['dir'],
                            f'{workload}_{spec["name"]}_grad_{point}.npz'),
               **_flatten(g))
    out[workload] = result
  return out


def _run_worker(spec, env_changes):
  out = bench_cpu_flags.run_worker(spec, env_changes, timeout=3600,
                                   module='benchmarks.cpu_flags_numerics')
  if 'error' in out:
    raise RuntimeError(f'{spec["name"]} failed:\n{out["error"]}')
  return out


def _rel(a, b):
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _params_vector(flat):
  return np.concatenate([np.ravel(v) for k, v in sorted(flat.items())
                         if k.startswith('params/')])


def compare(tmpdir, results, configs) -> Dict[str, Any]:
  """Loss/parameter differences to the reference, gradient errors to f64."""
  out = {}
  for workload in SIZES:
    load = lambda name: dict(np.load(os.path.join(tmpdir, f'{workload}_{name}.npz')))
    ref_losses = np.array(results['reference'][workload]['losses'])
    ref_final = load('reference_final')
    rows = {}
    for config in configs:
      losses = np.array(results[config][workload]['losses'])
      final = load(f'{config}_final')
      row = {'loss_max_abs_diff': float(np.max(np.abs(losses - ref_losses))),
             'loss_rel_diff_first_50': float(np.max(
                 np.abs(losses - ref_losses)[:50] / np.abs(ref_losses[:50]))),
             'final_params_rel_diff': _rel(_params_vector(final),
                                           _params_vector(ref_final)),
             'first_loss': float(losses[0]), 'last_loss': float(losses[-1])}
      for point in ('init', 'trained'):
        g = load(f'{config}_grad_{point}')
        g64 = load(f'float64_grad_{point}')
        errs = {k: _rel(g[k], g64[k]) for k in g64}
        bn = [e for k, e in errs.items() if 'bn' in k.split('/')[-2]] or [0.]
        row[f'grad_err_{point}'] = max(errs.values())
        row[f'bn_grad_err_{point}'] = max(bn)
      rows[config] = row
    out[workload] = rows
  return out


def render(summary, meta) -> str:
  lines = ['# Numerics of the CPU settings', '',
           'Generated by `python -m benchmarks.cpu_flags_numerics` (method in '
           'its docstring).', '',
           f'- Versions: {meta["versions"]}; {meta["steps"]} training steps; '
           f'`reference` = XLA\'s defaults; flaxish defaults: '
           f'`{meta["defaults"]}`',
           f'- Candidates: {meta["candidates"] or "none"}', '',
           '| workload | config | loss rel. diff to reference, steps 1-50 | '
           f'loss max abs. diff, steps 1-{meta["steps"]} | final '
           'params rel. diff | grad err. vs float64 (init / trained) | '
           'BatchNorm grad err. vs float64 (init / trained) |',
           '|---|---|---|---|---|---|---|']
  for workload, rows in summary.items():
    for config, r in rows.items():
      lines.append(
          f'| {workload} | `{config}` | {r["loss_rel_diff_first_50"]:.1e} | '
          f'{r["loss_max_abs_diff"]:.1e} | '
          f'{r["final_params_rel_diff"]:.1e} | {r["grad_err_init"]:.1e} / '
          f'{r.get("grad_err_trained", float("nan")):.1e} | '
          f'{r["bn_grad_err_init"]:.1e} / '
          f'{r.get("bn_grad_err_trained", float("nan")):.1e} |')
  return '\n'.join(lines) + '\n'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--candidate', action='append', default=[],
                      help='NAME=XLA_FLAGS')
  parser.add_argument('--no-write', action='store_true')
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(worker(json.loads(args.worker))))
    return
  candidates = dict(c.split('=', 1) for c in args.candidate)
  envs = {'reference': {OPT_OUT: '0'}, 'reference_1ulp': {OPT_OUT: '0'},
          'flaxish_defaults': {}}
  envs.update({n: {OPT_OUT: '0', 'XLA_FLAGS': f}
               for n, f in candidates.items()})
  results = {}
  with tempfile.TemporaryDirectory() as tmpdir:
    for name, env in envs.items():
      spec = dict(name=name, dir=tmpdir, steps=args.steps, float64=False,
                  reference=name == 'reference',
                  perturb=name == 'reference_1ulp')
      results[name] = _run_worker(spec, env)
      print(f'{name}: done', flush=True)
    _run_worker(dict(name='float64', dir=tmpdir, steps=0, float64=True,
                     reference=False), {OPT_OUT: '0', 'JAX_ENABLE_X64': '1'})
    summary = compare(tmpdir, results, list(envs))
  from benchmarks import bench  # pylint: disable=g-import-not-at-top
  from flaxish import cpu_defaults  # pylint: disable=g-import-not-at-top
  meta = {'versions': bench._versions(),  # pylint: disable=protected-access
          'steps': args.steps, 'candidates': candidates,
          'defaults': ' '.join(cpu_defaults.flags_for_this_jaxlib()),
          'date': time.strftime('%Y-%m-%d %H:%M')}
  text = render(summary, meta)
  print(text)
  if not args.no_write:
    os.makedirs(os.path.dirname(RESULTS_JSON), exist_ok=True)
    with open(RESULTS_JSON, 'w') as f:
      json.dump({'meta': meta, 'summary': summary,
                 'losses': {c: results[c] for c in results}}, f, indent=1)
    with open(RESULTS_MD, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  main()
