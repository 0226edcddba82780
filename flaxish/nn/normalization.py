"""Normalization layers: `BatchNorm`, `LayerNorm`, `GroupNorm`.

Statistics are computed in float32 (or wider if the input is wider) whatever
`dtype` is. Arguments shared by the layers:

- `dtype` (default float32): the dtype of the output.
- `param_dtype` (default float32): the storage dtype of the parameters.
- `bias` / `scale` (default True): whether to add a learned `bias` / multiply
  by a learned `scale`, initialized by `bias_init` (default zeros) /
  `scale_init` (default ones).
"""
from typing import Any, Callable, Optional, Sequence, Union
import warnings

from jax import lax
import jax.numpy as jnp

from flaxish.nn import initializers
from flaxish.nn import _util as utils
from flaxish.nn.modules import Module
from flaxish.nn.collection import Collection

__all__ = ['BatchNorm', 'LayerNorm', 'GroupNorm']

Array = Any
Initializer = Callable[..., Array]


def _warn_untracked(path: str) -> None:
  # The path in the text: Python's default filter shows it once per module.
  warnings.warn(
      f'{path}: BatchNorm(use_running_average=False) is called outside '
      '`nn.stateful()` and without batch_stats, so its running statistics '
      'are never updated (it normalizes with the batch statistics only); '
      'to train them, call the model inside `with nn.stateful(state) as '
      'new_state:` with the state from init', UserWarning, stacklevel=2)


def _check_stats_shape(where: str, stats: Any, x_shape, axis) -> None:
  expected = tuple(stats.shape)
  actual = tuple(x_shape[i] for i in axis)
  if expected != actual:
    def features(shape):
      return f'{shape[0]} features' if len(shape) == 1 else (
          f'feature shape {shape}')
    axes = f'axis {axis[0]}' if len(axis) == 1 else f'axes {axis}'
    raise ValueError(
        f'{where}: the running statistics were made for {features(expected)}'
        f', but the input of shape {tuple(x_shape)} has {features(actual)} '
        f'along {axes}; give it inputs with the features it was initialized '
        'with, or initialize the model again (under `with nn.stateful() as '
        'state:`) for the new feature count')


def _stats_dtype(x: Array) -> Any:
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def _mean_and_var(x: Array, axes: Sequence[int], keepdims: bool = False,
                  axis_name: Optional[str] = None, axis_index_groups=None):
  mean = jnp.mean(x, axes, keepdims=keepdims)
  mean2 = jnp.mean(lax.square(x), axes, keepdims=keepdims)
  if axis_name is not None:  # one pmean for both statistics
    both = lax.pmean(jnp.stack([mean, mean2]), axis_name,
                     axis_index_groups=axis_index_groups)
    mean, mean2 = both[0], both[1]
  # E[x^2] - E[x]^2 can come out slightly negative through rounding.
  return mean, jnp.maximum(mean2 - lax.square(mean), 0.)


def _normalize(module, centered: Array, inv_std: Array, feature_shape,
               param_shape, scale: bool, bias: bool, scale_init: Initializer,
               bias_init: Initializer, param_dtype: Any) -> Array:
  """`centered * (inv_std * scale) + bias`, parameters reshaped to
  `feature_shape` (`scale` is folded into the often per-channel factor, so
  the full-size activation is multiplied once)."""
  if scale:
    gamma = utils.param(module, 'scale', param_shape, scale_init, param_dtype)
    inv_std = inv_std * jnp.reshape(gamma, feature_shape).astype(
        inv_std.dtype)
  y = centered * inv_std
  if bias:
    beta = utils.param(module, 'bias', param_shape, bias_init, param_dtype)
    y = y + jnp.reshape(beta, feature_shape).astype(y.dtype)
  return y


class BatchNorm(Module):
  """Batch normalization, with running statistics kept as module state.

  Parameters: `scale` and `bias`, of the shape of the feature axes. State:
  `mean` and `var` (same shape), in the `batch_stats` Collection when given,
  else in the innermost `nn.stateful()` one; with neither, no running
  statistics are kept (a training call warns, once per module path). They
  start at 0 and 1 and, after init, are updated as
  `ra = momentum * ra + (1 - momentum) * batch_stat` on every call with
  `use_running_average=False` (not while initializing).

  Typical use:

      with nn.stateful() as state:                  # init
        _, params = Model.init(rng, x)
      with nn.stateful(state) as state:             # training step
        y = Model.call(params, x)
      with nn.stateful(state, mutable=False):       # eval, running averages
        y = Model.call(params, x, train=False)
  """

  def apply(self, x: Array, batch_stats: Optional[Collection] = None,
            use_running_average: bool = False,
            axis: Union[int, Sequence[int]] = -1, momentum: float = 0.99,
            epsilon: float = 1e-5, dtype: Any = jnp.float32,
            bias: bool = True, scale: bool = True,
            bias_init: Initializer = initializers.zeros,
            scale_init: Initializer = initializers.ones,
            axis_name: Optional[str] = None, axis_index_groups: Any = None,
            param_dtype: Any = jnp.float32) -> Array:
    """Normalizes `x` with batch (or running) statistics.

    Arguments:
      x: the input, e.g. `(batch, ..., features)`.
      batch_stats: a Collection for the running statistics (default None: use
        the `nn.stateful()` one, if any).
      use_running_average: normalize with the stored running statistics
        instead of the batch ones (evaluation); they must exist.
      axis: the feature axis or axes, which keep separate statistics
        (default -1); all other axes are reduced.
      momentum: decay of the running averages (default 0.99).
      epsilon: added to the variance (default 1e-5).
      dtype, bias, scale, bias_init, scale_init, param_dtype: see the
        module docstring.
      axis_name: a `pmap`/`shard_map` axis name: average the statistics over
        the devices along it (one `lax.pmean` of `[mean, mean(x^2)]`), so
        every replica uses and stores the same statistics (default None).
      axis_index_groups: device groups for `lax.pmean` (default None: all).
    Returns:
      An array of the shape of `x` and dtype `dtype`.
    """
    x = jnp.asarray(x, _stats_dtype(x))
    where = f'{self.path}: BatchNorm'
    axis = utils.normalize_axes(utils.as_tuple(axis), x.ndim, where, 'axis')
    feature_shape = tuple(d if i in axis else 1 for i, d in enumerate(x.shape))
    stats_shape = tuple(x.shape[i] for i in axis)
    reduction_axes = tuple(i for i in range(x.ndim) if i not in axis)

    if batch_stats is not None or self.is_stateful():
      ra_mean = self.state('mean', stats_shape, initializers.zeros,
                           collection=batch_stats)
      ra_var = self.state('var', stats_shape, initializers.ones,
                          collection=batch_stats)
      _check_stats_shape(where, ra_mean.value, x.shape, axis)
    else:
      ra_mean = ra_var = None
      if not use_running_average and not self.is_initializing():
        _warn_untracked(self.path)

    if use_running_average:
      if ra_mean is None:
        raise ValueError(
            f'{where}(use_running_average=True) needs running statistics, but '
            'none are available: run it inside `with nn.stateful(state, '
            'mutable=False):` with the state from init/training, or pass '
            'batch_stats=<Collection>')
      mean, var = (jnp.asarray(ra.value, x.dtype) for ra in (ra_mean, ra_var))
    else:
      if self.is_initializing():
        axis_name = None
      mean, var = _mean_and_var(x, reduction_axes, axis_name=axis_name,
                                axis_index_groups=axis_index_groups)
      if ra_mean is not None and not self.is_initializing():
        ra_mean.value = momentum * ra_mean.value + (1. - momentum) * mean
        ra_var.value = momentum * ra_var.value + (1. - momentum) * var

    y = _normalize(self, x - mean.reshape(feature_shape),
                   lax.rsqrt(var.reshape(feature_shape) + epsilon),
                   feature_shape, stats_shape, scale, bias, scale_init,
                   bias_init, param_dtype)
    return jnp.asarray(y, dtype)


class LayerNorm(Module):
  """Layer normalization (arxiv.org/abs/1607.06450) over the last axis.

  Parameters: `scale` and `bias` of shape `(features,)`.
  """

  def apply(self, x: Array, epsilon: float = 1e-6, dtype: Any = jnp.float32,
            bias: bool = True, scale: bool = True,
            bias_init: Initializer = initializers.zeros,
            scale_init: Initializer = initializers.ones,
            param_dtype: Any = jnp.float32) -> Array:
    """Normalizes each example over its last axis.

    Arguments:
      x: array of shape `(..., features)`.
      epsilon: added to the variance (default 1e-6).
      dtype, bias, scale, bias_init, scale_init, param_dtype: see the
        module docstring.
    Returns:
      An array of the shape of `x` and dtype `dtype`.
    """
    x = jnp.asarray(x, _stats_dtype(x))
    if x.ndim == 0:
      raise ValueError(f'{self.path}: LayerNorm expects inputs of shape '
                       '(..., features), got a scalar')
    features = x.shape[-1]
    mean, var = _mean_and_var(x, (-1,), keepdims=True)
    y = _normalize(self, x - mean, lax.rsqrt(var + epsilon), (features,),
                   (features,), scale, bias, scale_init, bias_init,
                   param_dtype)
    return jnp.asarray(y, dtype)


class GroupNorm(Module):
  """Group normalization (arxiv.org/abs/1803.08494).

  The channels (last axis) are split into groups; each example and group is
  normalized over its spatial axes and its channels. Parameters: `scale` and
  `bias` of shape `(1, ..., 1, channels)` (the rank of the input).
  """

  def apply(self, x: Array, num_groups: Optional[int] = 32,
            group_size: Optional[int] = None, epsilon: float = 1e-6,
            dtype: Any = jnp.float32, bias: bool = True, scale: bool = True,
            bias_init: Initializer = initializers.zeros,
            scale_init: Initializer = initializers.ones,
            param_dtype: Any = jnp.float32) -> Array:
    """Normalizes `x` per example and channel group.

    Arguments:
      x: array of shape `(batch, ..., channels)`.
      num_groups: the number of groups (default 32, from the paper).
      group_size: the number of channels per group (default None). Give
        exactly one of `num_groups` and `group_size`: to use `group_size`,
        pass `num_groups=None`.
      epsilon: added to the variance (default 1e-6).
      dtype, bias, scale, bias_init, scale_init, param_dtype: see the
        module docstring.
    Returns:
      An array of the shape of `x` and dtype `dtype`.
    """
    where = f'{self.path}: GroupNorm'
    if (num_groups is None) == (group_size is None):
      raise ValueError(
          f'{where} takes exactly one of num_groups and group_size, got '
          f'num_groups={num_groups}, group_size={group_size}; to set '
          'group_size, also pass num_groups=None')
    x = jnp.asarray(x, _stats_dtype(x))
    if x.ndim < 2:
      raise ValueError(f'{where} expects inputs of shape (batch, ..., '
                       f'channels), got shape {x.shape}')
    channels = x.shape[-1]
    if group_size is not None:
      if group_size <= 0 or channels % group_size:
        raise ValueError(
            f'{where}: the number of channels ({channels}) is not a multiple '
            f'of group_size ({group_size})')
      num_groups = channels // group_size
    if num_groups <= 0 or channels % num_groups:
      raise ValueError(
          f'{where}: the number of channels ({channels}) is not divisible by '
          f'num_groups ({num_groups}); choose num_groups dividing it')
    grouped = x.reshape(x.shape[:-1] + (num_groups, channels // num_groups))
    axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
    mean, var = _mean_and_var(grouped, axes, keepdims=True)
    param_shape = (1,) * (x.ndim - 1) + (channels,)
    y = _normalize(self, grouped - mean, lax.rsqrt(var + epsilon),
                   grouped.shape[-2:], param_shape, scale, bias, scale_init,
                   bias_init, param_dtype)
    return jnp.asarray(y.reshape(x.shape), dtype)
