"""Pooling: `pool` (any reduction over windows), `max_pool`, `avg_pool`.

Inputs are `(batch, window dims..., features)` (or one unbatched example,
`(window dims..., features)`); windows slide over the dims between the
batch and the feature axes.
"""
from typing import Any, Callable, Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxish.nn import _util as utils

__all__ = ['pool', 'max_pool', 'avg_pool']

Array = Any


def pool(inputs: Array, init: Any, reduce_fn: Callable[[Array, Array], Array],
         window_shape: Sequence[int], strides: Optional[Sequence[int]],
         padding: Any) -> Array:
  """Reduces every window of the input with `lax.reduce_window`.

  Arguments:
    inputs: array of shape `(batch, window dims..., features)` with
      `len(window_shape)` window dims, or `(window dims..., features)`.
    init: the initial value of the reduction (e.g. 0 for a sum).
    reduce_fn: `(x, y) -> z`, e.g. `lax.add` or `lax.max`.
    window_shape: the window size along each window dim.
    strides: the step along each window dim (None: all 1).
    padding: `'SAME'`, `'VALID'`, or one `(low, high)` pair per window dim;
      padded cells hold `init`.
  Returns:
    The reduction of each window, `(batch, out dims..., features)`.
  """
  with jax.named_scope('pool'):
    inputs = jnp.asarray(inputs)
    window_shape = utils.as_tuple(window_shape)
    n = len(window_shape)
    where = f'pool(window_shape={window_shape})'
    if inputs.ndim not in (n + 1, n + 2):
      raise ValueError(
          f'{where} expects inputs of shape (batch, {n} window dims, '
          f'features) (rank {n + 2}) or one unbatched example (rank {n + 1}), '
          f'got shape {inputs.shape}')
    shape = inputs.shape
    unbatched = inputs.ndim == n + 1
    if unbatched:
      inputs = inputs[None]
    strides = utils.spatial_tuple(strides, n, 'strides', where)
    for name, value in (('window_shape', window_shape), ('strides', strides)):
      if any(not isinstance(v, (int, np.integer)) or v < 1 for v in value):
        raise ValueError(f'{where}: {name} must be positive ints, got {value}')
    padding = utils.check_padding(padding, n, where)
    pads = ((0, 0),) * n if padding == 'VALID' else padding
    if not isinstance(pads, str):  # 'SAME' never empties the output
      for dim, (d, (lo, hi), window) in enumerate(
          zip(inputs.shape[1:], pads, window_shape)):
        if window > d + lo + hi:
          raise ValueError(
              f'{where}: the window is larger than the input of shape {shape}'
              f' along window dim {dim}: {d + lo + hi} positions (padding '
              f'included) for a window of {window}, so the output would be '
              "empty; use a smaller window, padding='SAME', or pad the input")
    if not isinstance(padding, str):
      padding = ((0, 0),) + tuple(padding) + ((0, 0),)
    if utils.is_tracer(init):
      init = init.astype(inputs.dtype)
    else:  # a concrete init lets JAX differentiate max/add windows
      init = np.array(init, dtype=inputs.dtype)
    y = lax.reduce_window(inputs, init, reduce_fn, (1,) + window_shape + (1,),
                          (1,) + strides + (1,), padding)
    return y[0] if unbatched else y


def avg_pool(inputs: Array, window_shape: Sequence[int],
             strides: Optional[Sequence[int]] = None,
             padding: Any = 'VALID') -> Array:
  """The mean of each window.

  Always divides by the window size, so padded zeros count (as in 2020).

  Arguments:
    inputs, window_shape, strides, padding: as in `pool`; strides default
      to all 1 and padding to `'VALID'`.
  Returns:
    The window means, `(batch, out dims..., features)`.
  """
  with jax.named_scope('avg_pool'):
    y = pool(inputs, 0., lax.add, window_shape, strides, padding)
    return y / np.prod(utils.as_tuple(window_shape))


def max_pool(inputs: Array, window_shape: Sequence[int],
             strides: Optional[Sequence[int]] = None,
             padding: Any = 'VALID') -> Array:
  """The maximum of each window (padded cells are -inf, never chosen).

  Arguments:
    inputs, window_shape, strides, padding: as in `pool`; strides default
      to all 1 and padding to `'VALID'`.
  Returns:
    The window maxima, `(batch, out dims..., features)`.
  """
  with jax.named_scope('max_pool'):
    inputs = jnp.asarray(inputs)
    if jnp.issubdtype(inputs.dtype, jnp.integer):
      init = jnp.iinfo(inputs.dtype).min
    elif inputs.dtype == jnp.bool_:
      init = False
    else:
      init = -jnp.inf
    return pool(inputs, init, lax.max, window_shape, strides, padding)
