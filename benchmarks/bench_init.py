"""flaxish `init_by_shape` vs Linen `init`, interleaved in one process.

    python -m benchmarks.bench_init --workloads=resnet50 --rounds=5
    python -m benchmarks.bench_init --cold --rounds=2   # caches cleared
    cd /path/to/older/tree && python -m benchmarks.bench_init

The last form times another flaxish (e.g. `git worktree add <tree>
<commit>`) against the same Linen, for before/after comparisons: run it
from inside that tree, since `python -m` puts the current directory first
on `sys.path` (the first line printed says which flaxish was timed).
Prints, per workload, the median times and the median and range of the
per-round ratios flaxish / Linen. Needs flax (the `.venv-bench` venv).
"""
import argparse
import json
import statistics
import time

import jax

import flaxish
from benchmarks import workloads


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workloads',
                      default='mnist_cnn,resnet18,transformer_lm,resnet50')
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--cold', action='store_true',
                      help='jax.clear_caches() before every call')
  args = parser.parse_args(argv)
  rng = jax.random.PRNGKey(0)
  print(f'flaxish from {flaxish.__file__}')
  for name in args.workloads.split(','):
    w = workloads.build(name, 'cpu')
    impls = {k: w.impls[k]() for k in ('flaxish', 'linen')}
    for impl in impls.values():
      jax.block_until_ready(impl.init_by_shape(rng))
    times = {k: [] for k in impls}
    for r in range(args.rounds):
      for k in (list(impls) if r % 2 == 0 else list(impls)[::-1]):
        if args.cold:
          jax.clear_caches()
        start = time.perf_counter()
        jax.block_until_ready(impls[k].init_by_shape(rng))
        times[k].append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(times['flaxish'], times['linen'])]
    print(name, 'cold' if args.cold else 'warm', json.dumps({
        'flaxish_s': round(statistics.median(times['flaxish']), 4),
        'linen_s': round(statistics.median(times['linen']), 4),
        'ratio': round(statistics.median(ratios), 3),
        'range': [round(min(ratios), 3), round(max(ratios), 3)]}),
          flush=True)


if __name__ == '__main__':
  main()
