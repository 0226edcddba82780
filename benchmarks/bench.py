"""The benchmark suite: flaxish vs plain JAX (vs Flax Linen + optax).

    python -m benchmarks.bench                       # preset for this backend
    python -m benchmarks.bench --cpu-defaults        # flaxish's XLA:CPU flags
    python -m benchmarks.bench --preset=tiny --workloads=mnist_cnn,mlp
    python -m benchmarks.bench --set resnet50.size=128 --set resnet50.batch=32
    python -m benchmarks.bench --update --workloads=resnet50   # redo one

Runs every workload (MNIST CNN, ResNet-18, ResNet-50, Transformer LM, and
the un-jitted MLP call), the init comparison with Linen, writes the raw
figures to `benchmarks/results/<cpu|gpu>.json` and renders
`benchmarks/RESULTS.md` from all the JSON files there. Linen columns appear
when `flax` and `optax` can be imported.

Every implementation runs in this one process, so all of them run under the
same `XLA_FLAGS`, which each record stores: the environment's, plus
flaxish's CPU flags (`flaxish.cpu_defaults.apply()`) with `--cpu-defaults`.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Dict

import jax

from flaxish import cpu_defaults
from benchmarks import harness
from benchmarks import memory
from benchmarks import report
from benchmarks import workloads

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, 'results')
INIT_WORKLOADS = ('mnist_cnn', 'resnet18', 'transformer_lm')

# Settings per preset: enough steps for a median over >= 30 steps.
SETTINGS = {
    'tiny': dict(rounds=1, steps=2, warmup=1, cold_rounds=1, init_rounds=1,
                 warm_init_rounds=1, call_rounds=1, calls=3),
    'cpu': dict(rounds=6, steps=6, warmup=2, cold_rounds=1, init_rounds=3,
                warm_init_rounds=5, call_rounds=7, calls=50),
    # On a GPU: one compile each, after an untimed one (autotuning).
    'gpu': dict(rounds=5, steps=20, warmup=5, cold_rounds=1, init_rounds=2,
                warm_init_rounds=5, warm_compile=True, call_rounds=7,
                calls=100),
}


def _versions() -> Dict[str, str]:
  out = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'numpy'):
    try:
      out[name] = __import__(name).__version__
    except Exception:  # pylint: disable=broad-except
      pass
  return out


def _commit() -> str:
  """The git commit of the tree, '+' if files differ from it; '' if none."""
  def git(*args):
    return subprocess.run(['git', *args], cwd=HERE, capture_output=True,
                          text=True, check=False).stdout.strip()
  head = git('rev-parse', '--short', 'HEAD')
  dirty = git('status', '--porcelain', '--untracked-files=no', '--',
              '../flaxish', '.')
  return head + ('+' if head and dirty else '')


def _machine() -> str:
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  mem = ''
  try:
    with open('/proc/meminfo') as f:
      mem = f', {int(f.readline().split()[1]) / 2**20:.0f} GiB RAM'
  except (OSError, ValueError, IndexError):
    pass
  return f'{os.cpu_count()} x {cpu}{mem}, {platform.system()}'


def _load() -> str:
  try:
    return f'{os.getloadavg()[0]:.1f}'
  except OSError:
    return '?'


def _overrides(items) -> Dict[str, Dict[str, Any]]:
  out: Dict[str, Dict[str, Any]] = {}
  for item in items or []:
    key, _, value = item.partition('=')
    workload, _, field = key.partition('.')
    if not field or not value:
      raise SystemExit(f'--set expects WORKLOAD.FIELD=VALUE, got {item!r}')
    try:
      value = json.loads(value)
    except ValueError:
      pass
    out.setdefault(workload, {})[field] = value
  return out


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', choices=workloads.PRESETS,
                      help='sizes and settings (default: gpu on a GPU, '
                      'else cpu)')
  parser.add_argument('--workloads',
                      default='mlp,mnist_cnn,resnet18,transformer_lm,resnet50')
  parser.add_argument('--init-workloads', default=','.join(INIT_WORKLOADS),
                      help='workloads of the init comparison with Linen '
                      '("" for none)')
  parser.add_argument('--impls',
                      default='flaxish,plain_jax,plain_jax_again,linen')
  for name in ('rounds', 'steps', 'warmup', 'cold_rounds', 'init_rounds',
               'warm_init_rounds', 'call_rounds', 'calls', 'warm_compile'):
    parser.add_argument('--' + name.replace('_', '-'), type=int,
                        help='override the preset\'s ' + name)
  parser.add_argument('--cpu-defaults', action='store_true',
                      help='call flaxish.cpu_defaults.apply() before JAX '
                      'starts: its XLA:CPU flags then apply to every '
                      'implementation alike')
  parser.add_argument('--memory', choices=('subprocess', 'none'),
                      help='measure peak memory in a fresh process per '
                      'implementation (default on CPU; each one compiles '
                      'the step again) or not; XLA\'s estimate of the '
                      'compiled step is always reported')
  parser.add_argument('--set', action='append', metavar='W.FIELD=VALUE',
                      help='override a workload size, e.g. resnet50.batch=32')
  parser.add_argument('--label', help='section title (default: the device)')
  parser.add_argument('--json', help='output file (default: '
                      'benchmarks/results/<cpu|gpu>.json)')
  parser.add_argument('--update', action='store_true',
                      help='keep the workloads of the existing JSON file '
                      'that this run does not measure (same device, '
                      'versions, settings and XLA flags): a suite in parts')
  parser.add_argument('--markdown', default=os.path.join(HERE, 'RESULTS.md'),
                      help='report rendered from all results/*.json; '
                      '"" to skip')
  return parser.parse_args(argv)


def start_jax(use_cpu_defaults: bool) -> Dict[str, str]:
  """Applies flaxish's CPU defaults if asked, then starts JAX's backend.

  Returns the settings every implementation runs with: `xla_flags` (as
  XLA read them) and `cpu_defaults` (what `apply()` did, or 'off').
  """
  if use_cpu_defaults:
    status = cpu_defaults.apply().value
  elif os.environ.get(cpu_defaults.ENV, '').strip().lower() in (
      '1', 'true', 'yes', 'on'):
    status = f'{cpu_defaults.ENV}={os.environ[cpu_defaults.ENV]}'
  else:
    status = 'off'
  flags = os.environ.get('XLA_FLAGS', '')
  jax.devices()  # XLA reads XLA_FLAGS now
  return {'xla_flags': flags, 'cpu_defaults': status}


def run(args, log=print, on_progress=None, on_start=None,
        jax_settings=None) -> Dict[str, Any]:
  """Runs the suite; returns the results dict.

  `jax_settings` is what `start_jax` returned. `on_start(results)` is
  called before any measurement (it may refuse the run by raising),
  `on_progress(results)` after every workload (to save partial results).
  """
  jax.config.update('jax_enable_compilation_cache', False)
  jax_settings = jax_settings or start_jax(False)
  backend = jax.default_backend()
  preset = args.preset or ('gpu' if backend == 'gpu' else 'cpu')
  settings = harness.Settings(**SETTINGS[preset])
  for name in vars(settings):
    if getattr(args, name, None) is not None:
      setattr(settings, name, getattr(args, name))
  settings.impls = tuple(args.impls.split(','))
  if args.memory is None:
    args.memory = 'subprocess' if backend == 'cpu' else 'none'
  overrides = _overrides(args.set)
  device = jax.devices()[0]
  names = [n for n in args.workloads.split(',') if n]
  init_names = [n for n in args.init_workloads.split(',') if n]
  meta = {
      'date': datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
      'command': 'python -m benchmarks.bench ' + ' '.join(sys.argv[1:]),
      'platform': backend, 'device_kind': device.device_kind,
      'label': args.label or (
          f'GPU: {device.device_kind}' if backend == 'gpu' else
          f'CPU: {os.cpu_count()} cores'),
      'machine': _machine(), 'versions': _versions(), 'commit': _commit(),
      **jax_settings, 'preset': preset,
      'settings': {k: v for k, v in vars(settings).items() if k != 'impls'},
      'workloads': names + [f'init:{n}' for n in init_names],
      'load_before': _load(),
      'memory_method': (
          'none measured; XLA estimate only' if args.memory == 'none' else
          'fresh process per implementation, '
          + ('device peak_bytes_in_use' if backend != 'cpu' else
             'resident-memory high-water mark (VmHWM)')
          + ' during the steps + train state size'),
  }
  have_flax = workloads.have_flax()
  log(f'{meta["label"]} | {meta["machine"]} | {meta["versions"]} | '
      f'XLA_FLAGS={meta["xla_flags"]!r} (cpu_defaults: '
      f'{meta["cpu_defaults"]}) | preset {preset}' +
      ('' if have_flax else ' | flax not installed: no Linen column'))
  results: Dict[str, Any] = {'meta': meta, 'workloads': {}, 'init': {}}
  if on_start:
    on_start(results)
  start = time.perf_counter()

  def progress():
    meta['wall_s'] = time.perf_counter() - start
    meta['load_after'] = _load()
    if on_progress:
      on_progress(results)

  for name in names:
    log(f'{name}:')
    w = workloads.build(name, preset, **overrides.get(name, {}))
    if name == 'mlp':
      results['call_overhead'] = harness.run_call_overhead(w, settings, log)
      continue
    res = harness.run_workload(w, settings, log)
    if args.memory == 'subprocess':
      log('  memory: one fresh process per implementation')
      res['memory'] = {n: memory.measure(name, n, preset,
                                         overrides.get(name, {}))
                       for n in res['impls']}
    results['workloads'][name] = res
    log('  steady-state step flaxish / plain JAX: ' +
        report.fmt_ratio(*report.step_ratio(res)))
    progress()
  for name in init_names:
    log(f'{name} init:')
    res = harness.run_init(workloads.build(name, preset,
                                           **overrides.get(name, {})),
                           settings, log)
    if res is None:
      log('  skipped: needs the flaxish and linen implementations')
      continue
    results['init'][name] = res
    log('  cold init_by_shape flaxish / Linen: ' +
        report.fmt_ratio(*report.init_ratio(res, 'cold_s')))
    progress()
  progress()
  return results


RUN_FIELDS = ('date', 'command', 'commit', 'wall_s', 'load_before',
              'load_after', 'workloads')
SAME_FIELDS = ('platform', 'device_kind', 'preset', 'versions', 'settings',
               'memory_method', 'xla_flags', 'cpu_defaults')


def merge(earlier: Dict[str, Any], results: Dict[str, Any]) -> Dict[str, Any]:
  """`earlier`'s figures with those of `results` replacing them where both
  have them; `meta['runs']` lists the runs (date, command, commit, wall
  time, load, workloads). Raises SystemExit where the runs are not
  comparable."""
  old, new = earlier['meta'], results['meta']
  for key in SAME_FIELDS:
    if old.get(key) != new.get(key):
      raise SystemExit(f'--update: {key} differs from the earlier run\'s '
                       f'({new.get(key)!r} vs {old.get(key)!r}); run the '
                       'whole suite instead')
  runs = old.get('runs') or [{k: old.get(k) for k in RUN_FIELDS}]
  merged = {**earlier, **results}
  for part in ('workloads', 'init'):
    merged[part] = {**earlier.get(part, {}), **results.get(part, {})}
  merged['meta'] = {**new,
                    'runs': runs + [{k: new.get(k) for k in RUN_FIELDS}]}
  return merged


def write_json(results: Dict[str, Any], json_path: str):
  os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
  with open(json_path + '.tmp', 'w') as f:
    json.dump(results, f, indent=1)
  os.replace(json_path + '.tmp', json_path)


def write(results: Dict[str, Any], json_path: str, markdown_path: str):
  """Writes the JSON file and renders the report from all of them."""
  write_json(results, json_path)
  if not markdown_path:
    return
  all_results = []
  for path in sorted(glob.glob(os.path.join(os.path.dirname(
      os.path.abspath(json_path)), '*.json'))):
    with open(path) as f:
      all_results.append(json.load(f))
  all_results.sort(key=lambda r: r['meta'].get('platform') != 'cpu')
  with open(markdown_path, 'w') as f:
    f.write(report.render(all_results))


def main(argv=None):
  args = parse_args(argv)
  jax_settings = start_jax(args.cpu_defaults)
  json_path = args.json or os.path.join(
      RESULTS_DIR, f'{"cpu" if jax.default_backend() == "cpu" else "gpu"}'
      '.json')
  earlier = None
  if args.update and os.path.exists(json_path):
    with open(json_path) as f:
      earlier = json.load(f)
  combine = (lambda r: merge(earlier, r)) if earlier else (lambda r: r)
  results = run(args, on_progress=lambda r: write_json(combine(r), json_path),
                on_start=combine,  # --update: refuses an incomparable run
                jax_settings=jax_settings)
  write(combine(results), json_path, args.markdown)
  print(f'wrote {json_path}' + (f' and {args.markdown}' if args.markdown
                                else ''))


if __name__ == '__main__':
  main()
