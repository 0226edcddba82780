"""Utilities on top of JAX: shape-only evaluation, replication, scans."""
import collections
import functools
import itertools
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from flaxish import traverse_util

__all__ = ['replicate', 'unreplicate', 'replicate_leaves',
           'unreplicate_leaves', 'pmean', 'prefetch_to_device', 'scan_in_dim',
           'partial_eval_by_shape', 'parse_input_spec', 'is_shape']


def is_shape(x) -> bool:
  """True for a tuple or list of integers."""
  return isinstance(x, (tuple, list)) and all(
      isinstance(d, (int, np.integer)) for d in x)


def parse_input_spec(spec) -> Any:
  """A pytree of `jax.ShapeDtypeStruct`s from a spec: a `(shape, dtype)`
  pair, a bare shape (float32), anything with `.shape` and `.dtype`, or a
  list/tuple/dict of specs."""
  if hasattr(spec, 'shape') and hasattr(spec, 'dtype'):
    return jax.ShapeDtypeStruct(spec.shape, spec.dtype)
  if is_shape(spec):
    return jax.ShapeDtypeStruct(tuple(spec), jnp.float32)
  if (isinstance(spec, (tuple, list)) and len(spec) == 2 and
      is_shape(spec[0]) and not is_shape(spec[1]) and
      not isinstance(spec[1], (tuple, list, dict))):
    return jax.ShapeDtypeStruct(tuple(spec[0]), jnp.dtype(spec[1]))
  if isinstance(spec, dict):
    return {k: parse_input_spec(v) for k, v in spec.items()}
  if isinstance(spec, (tuple, list)):
    return type(spec)(parse_input_spec(s) for s in spec)
  raise ValueError(f'invalid input spec {spec!r}: expected a (shape, dtype) '
                   'pair, a shape tuple, or an object with .shape and .dtype')


def partial_eval_by_shape(fn: Callable, input_spec: Sequence[Any], *args,
                          **kwargs) -> Any:
  """Evaluates `fn(*args, *inputs, **kwargs)` from input shapes only
  (`input_spec`: one spec per input, see `parse_input_spec`), through
  `jax.eval_shape`. Output leaves that depend on the inputs come back as
  `jax.ShapeDtypeStruct`, others (e.g. computed under
  `jax.ensure_compile_time_eval()`) as concrete values."""
  structs = [parse_input_spec(spec) for spec in input_spec]
  known = {}

  def traced(*inputs):
    out = fn(*args, *inputs, **kwargs)
    leaves, treedef = jax.tree_util.tree_flatten(out)
    known['treedef'] = treedef
    known.update((i, x) for i, x in enumerate(leaves)
                 if not isinstance(x, jax.core.Tracer))
    return [x for x in leaves if isinstance(x, jax.core.Tracer)]

  dynamic_shapes = iter(jax.eval_shape(traced, *structs))
  treedef = known['treedef']
  leaves = [known[i] if i in known else next(dynamic_shapes)
            for i in range(treedef.num_leaves)]
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _apply_hook(tree: Any, name: str, *args) -> Any:
  """Replaces each node whose type has method `name` (an `optim.Optimizer`
  needs more than a per-leaf copy) by `node.name(*args)`."""
  has_hook = lambda x: hasattr(type(x), name)
  return jax.tree_util.tree_map(
      lambda x: getattr(x, name)(*args) if has_hook(x) else x, tree,
      is_leaf=has_hook)


def _device_mesh_sharding(devices: Sequence[Any], axis_name: str):
  mesh = Mesh(np.array(list(devices), dtype=object), (axis_name,))
  return NamedSharding(mesh, PartitionSpec(axis_name))


def replicate_leaves(tree: Any, devices: Sequence[Any],
                      axis_name: str = 'batch') -> Any:
  """Stacks one copy of every leaf per device (no hooks); the mesh axis is
  named like the consuming `pmap` axis, else its second step recompiles."""
  if len(devices) == 0:
    raise ValueError(
        f'replicate: got an empty list of devices ({devices!r}); pass '
        'devices=None to use every local device (jax.local_devices()), or a '
        'non-empty list such as jax.local_devices()[:2]')
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  if not leaves:
    return tree
  n = len(devices)
  expanded = [(x if isinstance(x, jax.Array) else np.asarray(x))[None]
              for x in leaves]
  per_device = jax.device_put([expanded] * n, list(devices))
  sharding = _device_mesh_sharding(devices, axis_name)
  out = [jax.make_array_from_single_device_arrays(
             (n,) + tuple(x.shape[1:]), sharding, list(shards))
         for x, shards in zip(expanded, zip(*per_device))]
  return jax.tree_util.tree_unflatten(treedef, out)


def replicate(tree: Any, devices: Optional[Sequence[Any]] = None, *,
              axis_name: str = 'batch') -> Any:
  """Places one copy of `tree` on each device, stacked on a new axis 0:
  leaves get shape `(len(devices),) + x.shape`, one row per device.

  Arguments:
    tree: a pytree of arrays (or an `optim.Optimizer`, whose `state_dict()`
      then saves a single copy).
    devices: the devices (default: `jax.local_devices()`, pmap's order).
    axis_name: the `pmap` axis the copies will be used under (default
      'batch'); matching it avoids a second compilation of the step.
  """
  devices = list(devices) if devices is not None else jax.local_devices()
  tree = _apply_hook(tree, '_jax_utils_replicate', devices)
  return replicate_leaves(tree, devices, axis_name)


def _first_copy(x: Any) -> Any:
  """Row 0 of `x`, kept on one device when `x` is sharded row by row."""
  if isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer):
    if x.ndim == 0:
      raise ValueError('unreplicate: got a scalar leaf; the tree is not '
                       'replicated (replicated leaves have a leading device '
                       'axis)')
    shards = x.addressable_shards
    if shards and tuple(shards[0].data.shape[1:]) == tuple(x.shape[1:]):
      return shards[0].data[0]
  return x[0]


def unreplicate_leaves(tree: Any) -> Any:
  """Row 0 of every leaf, with no hooks applied."""
  return jax.tree_util.tree_map(_first_copy, tree)


def unreplicate(tree: Any) -> Any:
  """The first copy (`x[0]`, on device 0) of each leaf of a replicated tree."""
  return unreplicate_leaves(_apply_hook(tree, '_jax_utils_unreplicate'))


def pmean(xs: Any, axis_name: Any) -> Any:
  """Deprecated (as in 2020): use `jax.lax.pmean(xs, axis_name)`."""
  warnings.warn('jax_utils.pmean is deprecated; use jax.lax.pmean',
                DeprecationWarning, stacklevel=2)
  return lax.pmean(xs, axis_name)


def prefetch_to_device(iterator: Iterable[Any], size: int,
                       devices: Optional[Sequence[Any]] = None
                       ) -> Iterator[Any]:
  """Transfers batches to the devices ahead of time.

  Arguments:
    iterator: yields pytrees of host (NumPy) arrays whose leaves have a
      leading axis of size `len(devices)` (see `common_utils.shard`).
    size: how many batches to keep on the devices (>= 1; 2 copies the next
      batch while the current one is used).
    devices: the devices (default: `jax.local_devices()`).

  Yields:
    The same pytrees, leaves sharded row by row (row `i` on device `i`, as
    `jax.pmap` expects).
  """
  if size < 1:
    raise ValueError(f'prefetch_to_device: size must be >= 1, got {size}')
  devices = list(devices) if devices is not None else jax.local_devices()
  sharding = _device_mesh_sharding(devices, 'batch')
  n = len(devices)

  def put(batch):
    for path, x in jax.tree_util.tree_leaves_with_path(batch):
      if np.ndim(x) == 0 or np.shape(x)[0] != n:
        raise ValueError(
            f'prefetch_to_device: leaf {traverse_util.path_str(path)} has '
            f'shape {np.shape(x)} but its leading axis must be the number of '
            f'devices ({n}); reshape each batch with common_utils.shard first')
    return jax.device_put(batch, sharding)

  iterator = iter(iterator)
  queue = collections.deque(map(put, itertools.islice(iterator, size)))
  while queue:
    yield queue.popleft()
    queue.extend(map(put, itertools.islice(iterator, 1)))


def _normalize_axes(axis, ndim):
  axes = tuple(a + ndim if a < 0 else a for a in axis)
  if len(set(axes)) != len(axes) or any(not 0 <= a < ndim for a in axes):
    raise ValueError(f'scan_in_dim: invalid axes {axis} for an input with '
                     f'{ndim} dimensions')
  return axes


def scan_in_dim(body_fn: Callable[[Any, Any], Any], init: Any, xs: Any,
                axis: Any = (0,), keepdims: bool = False) -> Any:
  """`lax.scan` over one or several axes of `xs`, in row-major order over
  `axis` (the first listed axis is the outermost loop).

  Arguments:
    body_fn: `body_fn(carry, x) -> (carry, y)`; `x` is a slice of `xs` with
      the scanned axes removed (kept with size 1 if `keepdims`).
    init: the initial carry.
    xs: a pytree of arrays that all have the scanned axes.
    axis: an int or a tuple of ints (default `(0,)`).
    keepdims: keep the scanned axes (size 1) in the slices (default False).

  Returns:
    `(carry, ys)`; `ys` leaves have the scanned axes where `xs` has them.
  """
  axis = (axis,) if isinstance(axis, int) else tuple(axis)
  k = len(axis)

  def front_order(ndim):
    axes = _normalize_axes(axis, ndim)
    return axes + tuple(i for i in range(ndim) if i not in axes)

  def to_front(x):
    return jnp.transpose(x, front_order(x.ndim))

  def to_back(x, ndim):  # the inverse of to_front for an `ndim`-dim input
    return jnp.transpose(x, np.argsort(front_order(ndim)))

  def body(c, x):
    if keepdims:
      x = jax.tree_util.tree_map(
          lambda v: to_back(v.reshape((1,) * k + v.shape), v.ndim + k), x)
    c, y = body_fn(c, x)
    if keepdims:
      y = jax.tree_util.tree_map(lambda v: to_front(v)[(0,) * k], y)
    return c, y

  scan = body
  for _ in range(k):
    scan = functools.partial(lax.scan, scan)
  c, ys = scan(init, jax.tree_util.tree_map(to_front, xs))
  ys = jax.tree_util.tree_map(lambda y: to_back(y, y.ndim), ys)
  return c, ys
