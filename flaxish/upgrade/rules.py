"""The rewrite tables of `flaxish.upgrade` (old qualified name -> new one).

Each key is the fully qualified 2020 name as the code imports it; LibCST
resolves `import jax.numpy as jnp`, `from jax import tree_map` and aliases.
"""

__all__ = ['MODULES', 'NAMES', 'AT_METHODS', 'SHAPE_ARGS', 'ARRAY_MAKERS']

# Renamed modules: every import form and every `module.attr` use.
MODULES = {
    'flax': 'flaxish',
    'jax.experimental.optimizers': 'jax.example_libraries.optimizers',
    'jax.experimental.stax': 'jax.example_libraries.stax',
}

# Renamed functions and types: rule name, new qualified name.
NAMES = {
    **{f'jax.{n}': ('tree_util', f'jax.tree_util.{n}')
       for n in ('tree_map', 'tree_leaves', 'tree_flatten', 'tree_unflatten',
                 'tree_structure')},
    'jax.tree_multimap': ('tree_util', 'jax.tree_util.tree_map'),
    'jax.numpy.DeviceArray': ('device_array', 'jax.Array'),
    'jax.xla.DeviceArray': ('device_array', 'jax.Array'),
    'jax.interpreters.xla.DeviceArray': ('device_array', 'jax.Array'),
    'jax.ops.index': ('index_exp', 'jax.numpy.index_exp'),
    'jax.host_id': ('process_index', 'jax.process_index'),
    'jax.host_count': ('process_index', 'jax.process_count'),
    'jax.test_util.JaxTestCase': ('test_util', 'flaxish.upgrade.compat.JaxTestCase'),
    'jax.test_util.check_eq': ('test_util', 'flaxish.upgrade.compat.check_eq'),
    'jax.test_util.check_close': ('test_util', 'flaxish.upgrade.compat.check_close'),
    'jax.jit': (None, 'flaxish.upgrade.compat.jit'),  # only with static_argnums
}

# jax.ops.index_<op>(x, idx, y) -> x.at[idx].<method>(y).
AT_METHODS = {'index_update': 'set', 'index_add': 'add', 'index_mul': 'multiply',
              'index_min': 'min', 'index_max': 'max'}

# Arguments that must be static shapes: qualified function -> (position, keyword).
SHAPE_ARGS = {
    'jax.lax.dynamic_slice': (2, 'slice_sizes'),
    'jax.numpy.pad': (1, 'pad_width'),
    'jax.numpy.zeros': (0, 'shape'), 'jax.numpy.ones': (0, 'shape'),
    'jax.numpy.empty': (0, 'shape'), 'jax.numpy.full': (0, 'shape'),
    'jax.numpy.reshape': (1, 'newshape'), 'jax.numpy.broadcast_to': (1, 'shape'),
    'jax.lax.broadcast': (1, 'sizes'), 'jax.lax.reshape': (1, 'new_sizes'),
}

# Calls whose result is a jax.Array (for the iteration and .copy() checks).
ARRAY_MAKERS = ('jax.numpy.', 'jax.random.', 'jax.lax.', 'jax.nn.')
