"""Parameter initializers (`flax.nn.initializers`), re-exported from JAX.

An initializer is called `init(key, shape, dtype=jnp.float32) -> array`.
`zeros` and `ones` are initializers themselves; the others are factories
that return one, e.g. `lecun_normal()` or `variance_scaling(1., 'fan_in',
'normal')`.
"""
from jax.nn.initializers import (constant, delta_orthogonal, glorot_normal,
                                 glorot_uniform, he_normal, he_uniform,
                                 kaiming_normal, kaiming_uniform,
                                 lecun_normal, lecun_uniform, normal, ones,
                                 orthogonal, truncated_normal, uniform,
                                 variance_scaling, xavier_normal,
                                 xavier_uniform, zeros)

__all__ = ['kaiming_normal', 'kaiming_uniform', 'lecun_normal',
           'lecun_uniform', 'normal', 'ones', 'orthogonal', 'uniform',
           'variance_scaling', 'xavier_normal', 'xavier_uniform', 'zeros',
           'delta_orthogonal', 'constant', 'glorot_normal', 'glorot_uniform',
           'he_normal', 'he_uniform', 'truncated_normal']
