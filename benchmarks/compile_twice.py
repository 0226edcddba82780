"""Probe: each implementation's train step compiled twice in one process.

On a GPU, XLA autotunes matrix products and fusions while compiling and
caches the results per process, so a first compile pays for autotuning
(shared with any implementation compiled before that has the same kernels)
and a second compile of the same program finds it cached. Comparing the two
rounds, and a run with `XLA_FLAGS=--xla_gpu_autotune_level=0`, separates
autotuning from the rest of the compile. Prints, per round and
implementation, the lowering and compile times and what the optimized
program holds (fusions by kind, library calls).

  python -m benchmarks.compile_twice transformer_lm plain_jax,flaxish,linen
  python -m benchmarks.compile_twice mnist_cnn flaxish,plain_jax --preset=tiny

Not a test: nothing is asserted.
"""
import argparse
import collections
import json
import re
import time

import jax

from benchmarks import harness
from benchmarks import workloads

__all__ = ['program_summary']


def program_summary(hlo_text: str) -> dict:
  """Fusions by kind and custom-call targets of an optimized HLO module."""
  entry = hlo_text[hlo_text.find('ENTRY'):]
  return {
      'fusions': dict(collections.Counter(re.findall(r'kind=(k\w+)', entry))),
      'custom_calls': dict(collections.Counter(re.findall(
          r'custom_call_target="([^"]+)"', hlo_text))),
      'hlo_lines': hlo_text.count('\n'),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('workload')
  parser.add_argument('impls', help='comma-separated, compiled in this order')
  parser.add_argument('--preset', default='gpu', choices=workloads.PRESETS)
  parser.add_argument('--rounds', type=int, default=2)
  args = parser.parse_args(argv)
  w = workloads.build(args.workload, args.preset)
  batch = jax.block_until_ready(w.make_batch(jax.random.PRNGKey(1)))
  names = args.impls.split(',')
  impls = {n: w.impls[n]() for n in names}
  params, stats = jax.block_until_ready(
      w.impls['plain_jax']().init(jax.random.PRNGKey(0), batch))
  for r in range(args.rounds):
    for n in names:
      state = jax.block_until_ready(impls[n].make_state(
          harness.copy_tree(params), harness.copy_tree(stats)))
      jax.clear_caches()
      t0 = time.perf_counter()
      lowered = jax.jit(impls[n].train_step, donate_argnums=0).trace(
          state, batch).lower()
      t1 = time.perf_counter()
      compiled = lowered.compile()
      t2 = time.perf_counter()
      print(f'round {r} {n}: ' + json.dumps(
          {'lower_s': round(t1 - t0, 2), 'compile_s': round(t2 - t1, 2),
           **program_summary(compiled.as_text())}), flush=True)
      del compiled, state


if __name__ == '__main__':
  main()
