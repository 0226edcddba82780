"""flaxish: the 2020 flax.nn / flax.optim API on today's JAX.

Importing flaxish first applies its XLA:CPU defaults (`cpu_defaults`), which
must happen before JAX's backend starts.
"""
from flaxish import cpu_defaults
cpu_defaults.STATUS_AT_IMPORT = cpu_defaults.apply()
# pylint: disable=g-import-not-at-top,wrong-import-position
from flaxish import jax_utils, nn, optim, serialization, struct, traverse_util

__all__ = ['cpu_defaults', 'jax_utils', 'nn', 'optim', 'serialization', 'struct',
           'traverse_util']
__version__ = '0.1.0.dev0'
