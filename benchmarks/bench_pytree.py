"""Benchmark: the host cost of a train state as a pytree, per implementation.

Every call of a jitted train step flattens the state it is given and
rebuilds the state it returns. On a GPU, a small model's step is short
enough (MNIST: ~0.45 ms) for that host work to show in the step time. This
times `tree_flatten` and `tree_unflatten` of each implementation's train
state (the workloads of `bench.py`: flaxish's `Optimizer` of a `Model`,
plain JAX's tuple of dicts, Linen's `TrainState`), interleaved in rounds,
and reports medians in microseconds and the ratio to plain JAX.

  python -m benchmarks.bench_pytree                  # all training workloads
  python -m benchmarks.bench_pytree --workloads=mnist_cnn --rounds=5

Not a test: nothing is asserted. Results go in benchmarks/RESULTS_pytree.md.
"""
import argparse
import functools
import statistics
import time

import jax

from benchmarks import report
from benchmarks import workloads

__all__ = ['measure']


def _per_call(fn, calls: int) -> float:
  start = time.perf_counter()
  for _ in range(calls):
    fn()
  return (time.perf_counter() - start) / calls


def measure(workload_name: str, preset: str, impls, rounds: int,
            calls: int):
  """`{impl: {'flatten': s, 'unflatten': s, 'leaves': n}}`, medians over
  `rounds` interleaved rounds of `calls` calls each."""
  w = workloads.build(workload_name, preset)

  def make_state(impl):
    batch = w.make_batch(jax.random.PRNGKey(1))
    params, stats = w.impls['plain_jax']().init(jax.random.PRNGKey(0), batch)
    return impl.make_state(params, stats)

  # Abstract leaves (nothing is computed): the tree is that of the preset.
  states = {n: jax.eval_shape(functools.partial(make_state, w.impls[n]()))
            for n in impls if n in w.impls}
  samples = {n: {'flatten': [], 'unflatten': []} for n in states}
  for _ in range(rounds):
    for n, state in states.items():
      leaves, treedef = jax.tree_util.tree_flatten(state)
      samples[n]['flatten'].append(
          _per_call(lambda: jax.tree_util.tree_flatten(state), calls))
      samples[n]['unflatten'].append(
          _per_call(lambda: treedef.unflatten(leaves), calls))
  return {n: {'leaves': len(jax.tree_util.tree_leaves(states[n])),
              **{k: statistics.median(v) for k, v in s.items()}}
          for n, s in samples.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workloads', default=','.join(workloads.TRAINING))
  parser.add_argument('--impls', default='flaxish,plain_jax,linen')
  parser.add_argument('--preset', default='gpu', choices=workloads.PRESETS,
                      help='sizes (the tree depends on the layer count)')
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--calls', type=int, default=2000)
  args = parser.parse_args(argv)
  impls = args.impls.split(',')
  print(f'jax {jax.__version__}; preset {args.preset}; medians of '
        f'{args.rounds} rounds x {args.calls} calls\n')
  print('| workload | implementation | leaves | flatten | unflatten | '
        'both, / plain JAX |')
  print('|---|---|---|---|---|---|')
  for name in args.workloads.split(','):
    res = measure(name, args.preset, impls, args.rounds, args.calls)
    both = {n: r['flatten'] + r['unflatten'] for n, r in res.items()}
    for n, r in res.items():
      print(f'| {name} | {report.LABEL[n]} | {r["leaves"]} | '
            f'{r["flatten"] * 1e6:.2f} us | {r["unflatten"] * 1e6:.2f} us | '
            f'{both[n] * 1e6:.2f} us, {both[n] / both["plain_jax"]:.2f}x |')


if __name__ == '__main__':
  main()
