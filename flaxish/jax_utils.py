"""Utilities on top of JAX: shape-only evaluation, replication, scans."""
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['partial_eval_by_shape']


def _is_shape(x) -> bool:
  return isinstance(x, (tuple, list)) and all(
      isinstance(d, (int, np.integer)) for d in x)


def _parse_spec(spec) -> Any:
  """Turns an input spec into a pytree of `jax.ShapeDtypeStruct`s.

  A spec is a `(shape, dtype)` pair, a bare shape (float32), anything with
  `.shape` and `.dtype` (arrays, structs), or a list/tuple/dict of specs.
  """
  if hasattr(spec, 'shape') and hasattr(spec, 'dtype'):
    return jax.ShapeDtypeStruct(spec.shape, spec.dtype)
  if _is_shape(spec):
    return jax.ShapeDtypeStruct(tuple(spec), jnp.float32)
  if (isinstance(spec, (tuple, list)) and len(spec) == 2 and
      _is_shape(spec[0]) and not _is_shape(spec[1]) and
      not isinstance(spec[1], (tuple, list, dict))):
    return jax.ShapeDtypeStruct(tuple(spec[0]), jnp.dtype(spec[1]))
  if isinstance(spec, dict):
    return {k: _parse_spec(v) for k, v in spec.items()}
  if isinstance(spec, (tuple, list)):
    return type(spec)(_parse_spec(s) for s in spec)
  raise ValueError(f'invalid input spec {spec!r}: expected a (shape, dtype) '
                   'pair, a shape tuple, or an object with .shape and .dtype')


def partial_eval_by_shape(fn: Callable, input_spec: Sequence[Any], *args,
                          **kwargs) -> Any:
  """Evaluates `fn(*args, *inputs, **kwargs)` from input shapes only.

  Runs no computation on the inputs (the trace is abstract, through
  `jax.eval_shape`). Output leaves that depend on the inputs come back as
  `jax.ShapeDtypeStruct`; leaves computed without them (for instance under
  `jax.ensure_compile_time_eval()`) come back as concrete values.

  Arguments:
    fn: the function to evaluate.
    input_spec: a sequence with one spec per input (see `_parse_spec`).
  """
  structs = [_parse_spec(spec) for spec in input_spec]
  known = {}

  def traced(*inputs):
    out = fn(*args, *inputs, **kwargs)
    leaves, treedef = jax.tree_util.tree_flatten(out)
    known['treedef'] = treedef
    dynamic = []
    for i, leaf in enumerate(leaves):
      if isinstance(leaf, jax.core.Tracer):
        dynamic.append(leaf)
      else:
        known[i] = leaf
    return dynamic

  dynamic_shapes = iter(jax.eval_shape(traced, *structs))
  treedef = known['treedef']
  leaves = [known[i] if i in known else next(dynamic_shapes)
            for i in range(treedef.num_leaves)]
  return jax.tree_util.tree_unflatten(treedef, leaves)
