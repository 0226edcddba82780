"""flaxish: the 2020 flax.nn / flax.optim API on today's JAX."""
from flaxish import jax_utils, nn, optim, serialization, struct, traverse_util

__all__ = ['jax_utils', 'nn', 'optim', 'serialization', 'struct',
           'traverse_util']
__version__ = '0.1.0.dev0'
