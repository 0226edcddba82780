"""CPU step time under XLA settings: plain JAX, flaxish and PyTorch eager.

    python -m benchmarks.bench_cpu_flags                   # the report run
    python -m benchmarks.bench_cpu_flags --workloads=mnist_cnn --rounds=2 \\
        --configs=jax,jax+defaults,pytorch
    python -m benchmarks.bench_cpu_flags --candidate \\
        no_ynn_conv=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution

XLA reads `XLA_FLAGS` once, when the backend starts, so every measurement
runs in a fresh process (`--worker`). A *config* names the implementation
and the environment of that process:

- `jax`: hand-written JAX (`workloads/plain*.py`) with XLA's defaults
  (`FLAXISH_CPU_DEFAULTS=0`, since the workloads import flaxish);
- `jax+defaults`: the same program with flaxish's CPU defaults
  (`flaxish/cpu_defaults.py`) in effect;
- `flaxish`: the flaxish model and optimizer, flaxish's defaults in effect;
- `flaxish-plain-dense-grad`: flaxish with `Dense`'s kernel gradient
  formed as XLA forms it (no written-out transpose; an ablation of
  `flaxish/nn/_dense_dot.py`);
- `pytorch`: the same model in PyTorch eager (`pytorch_workloads.py`);
- `pytorch-explicit-attention`: the same, with the Transformer's attention
  written out instead of PyTorch's fused kernel (other workloads: same as
  `pytorch`);
- `--candidate NAME=FLAGS`: hand-written JAX with `XLA_FLAGS=FLAGS` (and
  flaxish's defaults off), to try settings.

Rounds are interleaved (every config once per round, in a rotating order),
so that a noisy machine slows all configs alike. Each process compiles,
runs `warmup` untimed steps, then `steps` steps each timed alone until its
loss is on the host. Figures: the median step over all rounds, and ratios
to `jax` computed per round (the range is the run-to-run spread).
Writes `benchmarks/results/cpu_flags/timing.json` and
`benchmarks/RESULTS_cpu_flags.md`.
"""
import argparse
import json
import os
import statistics
import time
from typing import Any, Dict, List

from benchmarks import child_process

HERE = os.path.dirname(os.path.abspath(__file__))
# Not in results/ itself: bench.py renders every results/*.json.
RESULTS_JSON = os.path.join(HERE, 'results', 'cpu_flags', 'timing.json')
RESULTS_MD = os.path.join(HERE, 'RESULTS_cpu_flags.md')
OPT_OUT = 'FLAXISH_CPU_DEFAULTS'

# The sizes measured: the suite's CPU preset, with ResNet-18 at its usual
# CIFAR size (width 64, batch 64).
SIZES = {
    'mnist_cnn': dict(batch=128),
    'resnet18': dict(batch=64, size=32, width=64),
    'resnet50': dict(batch=4, size=64, width=16),
    'transformer_lm': dict(batch=4, length=128, vocab=2048, emb=128, heads=4,
                           mlp=512, layers=2),
}
CONFIGS = ('jax', 'jax+defaults', 'flaxish', 'pytorch')


def _config_env(config: str, candidates: Dict[str, str]) -> Dict[str, str]:
  """The environment changes of `config`'s worker process."""
  if config in candidates:
    return {OPT_OUT: '0', 'XLA_FLAGS': candidates[config]}
  if config in ('jax', 'pytorch', 'pytorch-explicit-attention'):
    return {OPT_OUT: '0'}
  return {}


# ------------------------------------------------------------------ worker --

def _plain_dense_grad():
  """Makes flaxish's Dense differentiate like `lax.dot_general` (ablation)."""
  from flaxish.nn import _dense_dot  # pylint: disable=g-import-not-at-top
  _dense_dot._kernel_tangent = _dense_dot._plain  # pylint: disable=protected-access


def _jax_worker(workload: str, impl_name: str, sizes, warmup, steps):
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import workloads  # pylint: disable=g-import-not-at-top
  if impl_name == 'flaxish-plain-dense-grad':
    _plain_dense_grad()
    impl_name = 'flaxish'
  w = workloads.build(workload, 'cpu', **sizes)
  batch = jax.block_until_ready(w.make_batch(jax.random.PRNGKey(1)))
  params, stats = w.impls['plain_jax']().init(jax.random.PRNGKey(0), batch)
  impl = w.impls[impl_name]()
  state = impl.make_state(params, stats)
  start = time.perf_counter()
  step = jax.jit(impl.train_step, donate_argnums=0).lower(
      state, batch).compile()
  compile_s = time.perf_counter() - start
  losses, times = [], []
  for i in range(warmup + steps):
    start = time.perf_counter()
    state, loss = step(state, batch)
    loss = float(loss)
    if i >= warmup:
      times.append(time.perf_counter() - start)
    losses.append(loss)
  return {'compile_s': compile_s, 'times': times, 'losses': losses,
          'items_per_step': w.items_per_step,
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def _torch_worker(workload: str, sizes, warmup, steps):
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import pytorch_workloads  # pylint: disable=g-import-not-at-top
  step, items = pytorch_workloads.make(workload, **sizes)
  losses, times = [], []
  for i in range(warmup + steps):
    start = time.perf_counter()
    losses.append(step())
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return {'times': times, 'losses': losses, 'items_per_step': items,
          'torch': torch.__version__, 'threads': torch.get_num_threads()}


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
  """Runs one measurement in this (fresh) process."""
  sizes, warmup, steps = spec['sizes'], spec['warmup'], spec['steps']
  if spec['impl'] == 'pytorch':
    return _torch_worker(spec['workload'], sizes, warmup, steps)
  return _jax_worker(spec['workload'], spec['impl'], sizes, warmup, steps)


def run_worker(spec, env_changes, timeout=1800,
               module='benchmarks.bench_cpu_flags') -> Dict[str, Any]:
  """Runs `python -m module --worker SPEC` in a fresh process whose
  environment is ours without XLA_FLAGS, plus `env_changes`; returns the
  JSON line it prints last, or `{'error': ...}`."""
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env.update(env_changes)
  return child_process.run_module(module, ['--worker', json.dumps(spec)], env,
                                  timeout)


# ------------------------------------------------------------------ parent --

def _impl_of(config: str, candidates) -> str:
  if config in candidates or config in ('jax', 'jax+defaults'):
    return 'plain_jax'
  if config.startswith('pytorch'):
    return 'pytorch'
  return config


def run(workloads: List[str], configs: List[str], candidates: Dict[str, str],
        rounds: int, warmup: int, steps: int, log=print) -> Dict[str, Any]:
  """Interleaved rounds; returns the raw samples per workload and config."""
  samples = {w: {c: [] for c in configs} for w in workloads}
  for r in range(rounds):
    k = r % len(configs)
    for config in configs[k:] + configs[:k]:
      for workload in workloads:
        sizes = dict(SIZES[workload])
        if config == 'pytorch-explicit-attention':
          sizes['explicit_attention'] = True
        spec = dict(workload=workload, impl=_impl_of(config, candidates),
                    sizes=sizes, warmup=warmup, steps=steps)
        out = run_worker(spec, _config_env(config, candidates))
        out['load'] = os.getloadavg()[0]
        samples[workload][config].append(out)
        if 'error' in out:
          log(f'round {r} {workload} {config}: ERROR {out["error"]}')
        else:
          log(f'round {r} {workload:15s} {config:24s} median '
              f'{statistics.median(out["times"]) * 1e3:9.1f} ms  '
              f'load {out["load"]:.1f}')
  return samples


def _ratios(by_config, num: str, den: str) -> Dict[str, Any]:
  """Median and range of the per-round ratios of median step times."""
  ratios = [statistics.median(a['times']) / statistics.median(b['times'])
            for a, b in zip(by_config[num], by_config[den])
            if 'error' not in a and 'error' not in b]
  if not ratios:
    return {}
  return {'ratio': statistics.median(ratios),
          'ratio_range': [min(ratios), max(ratios)]}


def summarize(samples, configs) -> Dict[str, Any]:
  """Median step time per config, per-round ratios to the first config,
  and flaxish over PyTorch when both ran."""
  out = {}
  for workload, by_config in samples.items():
    rows = {}
    for config in configs:
      runs = [s for s in by_config[config] if 'error' not in s]
      if not runs:
        rows[config] = {'error': by_config[config][0].get('error')}
        continue
      pooled = [t for s in runs for t in s['times']]
      rows[config] = {'median_ms': 1e3 * statistics.median(pooled),
                      'round_medians_ms': [1e3 * statistics.median(s['times'])
                                           for s in runs],
                      **_ratios(by_config, config, configs[0])}
    if 'flaxish' in configs and 'pytorch' in configs:
      rows['flaxish/pytorch'] = _ratios(by_config, 'flaxish', 'pytorch')
    out[workload] = rows
  return out


def render(summary, configs, meta) -> str:
  lines = ['# CPU step time: flaxish defaults vs XLA defaults vs PyTorch',
           '', 'Generated by `python -m benchmarks.bench_cpu_flags` '
           '(method in its docstring and in `benchmarks/README.md`, section '
           '"CPU defaults").', '',
           f'- Machine: {meta["machine"]}; load average {meta["load"]}',
           f'- Versions: {meta["versions"]}',
           f'- {meta["rounds"]} interleaved rounds x {meta["steps"]} timed '
           f'steps (after {meta["warmup"]} warm-up steps), one fresh '
           'process per config, workload and round',
           f'- flaxish CPU defaults in effect: `{meta["defaults"]}`', '',
           f'Train-step time, median ms (ratio to `{configs[0]}`, median of '
           'the per-round ratios, [range]):', '',
           '| workload | ' + ' | '.join(f'`{c}`' for c in configs) +
           (' | `flaxish` / `pytorch` |' if 'flaxish/pytorch' in
            next(iter(summary.values())) else ' |')]
  lines.append('|---' * (lines[-1].count('|') - 1) + '|')
  for workload, rows in summary.items():
    cells = []
    for config in configs:
      row = rows[config]
      if 'error' in row:
        cells.append('error')
        continue
      cell = f'{row["median_ms"]:.1f}'
      if 'ratio' in row and config != configs[0]:
        lo, hi = row['ratio_range']
        cell += f' ({row["ratio"]:.3f} [{lo:.2f}-{hi:.2f}])'
      cells.append(cell)
    if rows.get('flaxish/pytorch'):
      r = rows['flaxish/pytorch']
      lo, hi = r['ratio_range']
      cells.append(f'{r["ratio"]:.3f} [{lo:.2f}-{hi:.2f}]')
    lines.append(f'| {workload} {SIZES[workload]} | ' + ' | '.join(cells) +
                 ' |')
  return '\n'.join(lines) + '\n'


def _meta(args, candidates):
  from benchmarks import bench  # pylint: disable=g-import-not-at-top
  from flaxish import cpu_defaults  # pylint: disable=g-import-not-at-top
  versions = bench._versions()  # pylint: disable=protected-access
  try:
    import torch  # pylint: disable=g-import-not-at-top
    versions['torch'] = torch.__version__
  except ImportError:
    pass
  return {'machine': bench._machine(),  # pylint: disable=protected-access
          'load': f'{os.getloadavg()[0]:.1f}', 'versions': versions,
          'rounds': args.rounds, 'steps': args.steps, 'warmup': args.warmup,
          'defaults': ' '.join(cpu_defaults.flags_for_this_jaxlib()),
          'candidates': candidates,
          'date': time.strftime('%Y-%m-%d %H:%M')}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--workloads', default=','.join(SIZES))
  parser.add_argument('--configs', default=','.join(CONFIGS))
  parser.add_argument('--candidate', action='append', default=[],
                      help='NAME=XLA_FLAGS, hand-written JAX with these flags')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--no-write', action='store_true',
                      help='print the table, do not write the report')
  args = parser.parse_args(argv)
  if args.worker:
    print(json.dumps(worker(json.loads(args.worker))))
    return
  candidates = dict(c.split('=', 1) for c in args.candidate)
  configs = [c for c in args.configs.split(',') if c] + list(candidates)
  workloads = args.workloads.split(',')
  samples = run(workloads, configs, candidates, args.rounds, args.warmup,
                args.steps)
  summary = summarize(samples, configs)
  meta = _meta(args, candidates)
  text = render(summary, configs, meta)
  print(text)
  if not args.no_write:
    os.makedirs(os.path.dirname(RESULTS_JSON), exist_ok=True)
    with open(RESULTS_JSON, 'w') as f:
      json.dump({'meta': meta, 'configs': configs, 'summary': summary,
                 'samples': samples}, f, indent=1)
    with open(RESULTS_MD, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  main()
