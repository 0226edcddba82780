"""flaxish: the 2020 flax.nn / flax.optim API on today's JAX.

Importing flaxish changes no environment variable and no JAX setting. The
opt-in XLA:CPU settings are `flaxish.cpu_defaults.apply()` (or
`FLAXISH_CPU_DEFAULTS=1` in the environment).
"""
from flaxish import cpu_defaults
cpu_defaults.apply_if_requested()  # before any import could start JAX
# pylint: disable=g-import-not-at-top,wrong-import-position
from flaxish import jax_utils, nn, optim, serialization, struct, traverse_util

__all__ = ['cpu_defaults', 'jax_utils', 'nn', 'optim', 'serialization',
           'struct', 'traverse_util']
__version__ = '0.1.0.dev0'
