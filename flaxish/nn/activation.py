"""Activation functions (`flax.nn.activation`), re-exported from `jax.nn`.

`normalize` is the 2020 name of `jax.nn.standardize` (removed from JAX under
its old name): `normalize(x, axis=-1, mean=None, variance=None,
epsilon=1e-5)` returns `(x - mean) / sqrt(variance + epsilon)`.
"""
from jax.nn import (celu, elu, gelu, glu, hard_sigmoid, hard_swish,
                    hard_tanh, leaky_relu, log_sigmoid, log_softmax, relu,
                    relu6, selu, sigmoid, silu, soft_sign, softmax, softplus,
                    swish)
from jax.nn import standardize as normalize
from jax.numpy import tanh

__all__ = ['celu', 'elu', 'gelu', 'glu', 'leaky_relu', 'log_sigmoid',
           'log_softmax', 'normalize', 'relu', 'sigmoid', 'soft_sign',
           'softmax', 'softplus', 'swish', 'tanh', 'selu', 'hard_tanh',
           'relu6', 'hard_sigmoid', 'hard_swish', 'silu']
