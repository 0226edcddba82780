"""The benchmark workloads, each at the sizes of a preset.

`build(name, preset)` returns a `Workload` (or, for 'mlp', the call-overhead
`CallOverhead`). Presets: 'tiny' (tests), 'cpu' (the default run) and 'gpu'.
"""
from benchmarks.workloads import mlp, mnist_cnn, resnet, transformer_lm
from benchmarks.workloads.base import Impl, Workload, have_flax

__all__ = ['TRAINING', 'PRESETS', 'build', 'Impl', 'Workload', 'have_flax']

TRAINING = ('mnist_cnn', 'resnet18', 'resnet50', 'transformer_lm')
PRESETS = ('tiny', 'cpu', 'gpu')


def build(name: str, preset: str = 'cpu', **overrides):
  """The workload `name` at the sizes of `preset`, with `overrides`."""
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
