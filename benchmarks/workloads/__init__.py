"""The benchmark workloads, each at the sizes of a preset.

`build(name, preset)` returns a `Workload` (or, for 'mlp', the call-overhead
`CallOverhead`). Presets: 'tiny' (tests), 'cpu' (the default run) and 'gpu'.
"""
from benchmarks.workloads import mlp, mnist_cnn, resnet, transformer_lm
from benchmarks.workloads.base import Impl, Workload, have_flax

__all__ = ['TRAINING', 'PRESETS', 'CONTROL', 'build', 'Impl', 'Workload',
           'have_flax']

TRAINING = ('mnist_cnn', 'resnet18', 'resnet50', 'transformer_lm')
PRESETS = ('tiny', 'cpu', 'gpu')


# A second, separately compiled instance of plain JAX: its ratio to plain JAX
# is the resolution of the comparison (compile-to-compile and run-to-run).
CONTROL = 'plain_jax_again'


def build(name: str, preset: str = 'cpu', **overrides):
  """The workload `name` at the sizes of `preset`, with `overrides`.

  A training workload's `impls` also hold `CONTROL`, plain JAX once more.
  """
  workload = _build(name, preset, **overrides)
  if isinstance(workload, Workload):
    workload.impls[CONTROL] = workload.impls['plain_jax']
  return workload


def _build(name: str, preset: str, **overrides):
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r}; choose from {PRESETS}')
  if name == 'mnist_cnn':
    return mnist_cnn.make(**{**mnist_cnn.PRESETS[preset], **overrides})
  if name in ('resnet18', 'resnet50'):
    return resnet.make(name, **{**resnet.PRESETS[name][preset], **overrides})
  if name == 'transformer_lm':
    return transformer_lm.make(**{**transformer_lm.PRESETS[preset],
                                  **overrides})
  if name == 'mlp':
    return mlp.make(**{**mlp.PRESETS[preset], **overrides})
  raise ValueError(f'unknown workload {name!r}; choose from '
                   f'{TRAINING + ("mlp",)}')
