"""Linear layers: `Dense`, `DenseGeneral`, `Conv`, `ConvTranspose`, `Embed`.

All layers take channels-last inputs. Arguments shared by the layers:

- `dtype` (default float32): the computation dtype; inputs and parameters
  are cast to it, and the output has it.
- `param_dtype` (default float32): the dtype the parameters are stored in,
  e.g. `dtype=jnp.bfloat16` over float32 parameters.
- `precision` (default None): the `lax.Precision` passed to
  `lax.dot_general` / `lax.conv_general_dilated`.
- `kernel_init` (default `lecun_normal()`), `bias_init` (default `zeros`).
- `bias` (default True): whether to add a bias.
"""
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxish.nn import initializers
from flaxish.nn import _util as utils
from flaxish.nn.modules import Module, module_method

__all__ = ['Dense', 'DenseGeneral', 'Conv', 'ConvTranspose', 'Embed',
           'default_kernel_init', 'default_embed_init']

Array = Any
Initializer = Callable[..., Array]

default_kernel_init = initializers.lecun_normal()
default_embed_init = initializers.variance_scaling(1.0, 'fan_in', 'normal',
                                                   out_axis=0)


def _check_features(path: str, layer: str, features: Any) -> None:
  for f in utils.as_tuple(features):
    if not isinstance(f, (int, np.integer)) or f <= 0:
      raise ValueError(f'{path}: {layer} needs positive integer features, got '
                       f'features={features!r}')


def _add_bias(module, y: Array, features: int, bias_init: Initializer,
              param_dtype: Any, dtype: Any) -> Array:
  b = utils.param(module, 'bias', (features,), bias_init, param_dtype)
  return y + jnp.asarray(b, dtype)


class Dense(Module):
  """A linear transformation over the last axis: `y = x @ kernel + bias`.

  Parameters: `kernel` of shape `(in_features, features)` and `bias` of shape
  `(features,)`.
  """

  def apply(self, inputs: Array, features: int, bias: bool = True,
            dtype: Any = jnp.float32, precision: Any = None,
            kernel_init: Initializer = default_kernel_init,
            bias_init: Initializer = initializers.zeros,
            param_dtype: Any = jnp.float32) -> Array:
    """Applies the layer.

    Arguments:
      inputs: array of shape `(..., in_features)`.
      features: the number of output features.
      bias, dtype, precision, kernel_init, bias_init, param_dtype: see the
        module docstring.
    Returns:
      An array of shape `(..., features)` and dtype `dtype`.
    """
    _check_features(self.path, 'Dense', features)
    inputs = jnp.asarray(inputs, dtype)
    if inputs.ndim == 0:
      raise ValueError(f'{self.path}: Dense expects inputs of shape '
                       '(..., in_features), got a scalar')
    kernel = utils.param(self, 'kernel', (inputs.shape[-1], features),
                         kernel_init, param_dtype)
    y = lax.dot_general(inputs, jnp.asarray(kernel, dtype),
                        (((inputs.ndim - 1,), (0,)), ((), ())),
                        precision=precision)
    if bias:
      y = _add_bias(self, y, features, bias_init, param_dtype, dtype)
    return y


def _sliced_init(init: Initializer, num_slices: int,
                 flat_shape: Tuple[int, ...], param_dtype: Any) -> Initializer:
  """Fills a batched kernel with one `init(key_k, flat_shape)` per slice."""
  dtype = utils.init_dtype(param_dtype)

  def wrapped(key, shape):
    keys = [key] if num_slices == 1 else jax.random.split(key, num_slices)
    value = jnp.stack([jnp.asarray(init(k, flat_shape, dtype)) for k in keys])
    return jnp.asarray(value.reshape(shape), param_dtype)

  return wrapped


class DenseGeneral(Module):
  """A linear transformation over several axes, with optional batch axes.

  The kernel has shape `batch_shape + in_shape + features` (the sizes of
  `batch_dims`, `axis`, `features`), the bias `batch_shape + features`. The
  initializers get `(prod(in_shape), prod(features))` (bias:
  `(prod(features),)`) once per batch slice, in row-major order, each slice
  with its own key from `jax.random.split` (2020 reused one key); without
  batch dims the key is the parameter's own, as in `Dense`.
  """

  def apply(self, inputs: Array, features: Union[int, Sequence[int]],
            axis: Union[int, Sequence[int]] = -1,
            batch_dims: Union[int, Sequence[int]] = (), bias: bool = True,
            dtype: Any = jnp.float32,
            kernel_init: Initializer = default_kernel_init,
            bias_init: Initializer = initializers.zeros,
            precision: Any = None, param_dtype: Any = jnp.float32) -> Array:
    """Applies the layer.

    Arguments:
      inputs: an array.
      features: an int or tuple of ints, the output feature shape.
      axis: an int or tuple of ints, the input axes contracted with the
        kernel (default -1).
      batch_dims: an int or tuple of ints, leading axes `0..k-1` that get one
        kernel each (default `()`).
      bias, dtype, kernel_init, bias_init, precision, param_dtype: see the
        module docstring.
    Returns:
      An array of shape `batch_shape + other_input_dims + features`, where
      `other_input_dims` are the input axes in neither `axis` nor
      `batch_dims`, in their order.
    """
    features = utils.as_tuple(features)
    _check_features(self.path, 'DenseGeneral', features)
    inputs = jnp.asarray(inputs, dtype)
    ndim = inputs.ndim
    where = f'{self.path}: DenseGeneral'
    axis = utils.normalize_axes(utils.as_tuple(axis), ndim, where, 'axis')
    batch_dims = utils.normalize_axes(utils.as_tuple(batch_dims), ndim, where,
                                      'batch_dims')
    if batch_dims and sorted(batch_dims) != list(range(len(batch_dims))):
      raise ValueError(f'{where}: batch_dims {batch_dims} must be consecutive '
                       'leading dimensions starting from 0')
    if set(axis) & set(batch_dims):
      raise ValueError(f'{where}: axis {axis} and batch_dims {batch_dims} '
                       'overlap')
    batch_dims = tuple(sorted(batch_dims))
    n_batch = len(batch_dims)

    batch_shape = tuple(inputs.shape[ax] for ax in batch_dims)
    in_shape = tuple(inputs.shape[ax] for ax in axis)
    num_slices = int(np.prod(batch_shape, dtype=np.int64))
    n_in, n_out = int(np.prod(in_shape)), int(np.prod(features))

    kernel = self.param(
        'kernel', batch_shape + in_shape + features,
        _sliced_init(kernel_init, num_slices, (n_in, n_out), param_dtype))
    kernel = jnp.asarray(kernel, dtype)
    contract = tuple(range(n_batch, n_batch + len(axis)))
    y = lax.dot_general(
        inputs, kernel,
        ((axis, contract), (batch_dims, tuple(range(n_batch)))),
        precision=precision)
    if bias:
      b = self.param(
          'bias', batch_shape + features,
          _sliced_init(bias_init, num_slices, (n_out,), param_dtype))
      n_free = ndim - n_batch - len(axis)
      b = jnp.reshape(b, batch_shape + (1,) * n_free + features)
      y = y + jnp.asarray(b, dtype)
    return y


def _conv_dimension_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  """Channels-last dimension numbers for an input of rank `ndim`."""
  spatial = tuple(range(1, ndim - 1))
  lhs = (0, ndim - 1) + spatial
  rhs = (ndim - 1, ndim - 2) + tuple(range(ndim - 2))
  return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def _positive_ints(value: Any, n: int, name: str,
                   where: str) -> Tuple[int, ...]:
  """`value` as `n` positive ints (None: all 1; an int: repeated)."""
  value = utils.spatial_tuple(value, n, name, where)
  if any(not isinstance(v, (int, np.integer)) or v < 1 for v in value):
    raise ValueError(f'{where}: {name} must be {n} positive ints, got '
                     f'{name}={value!r}')
  return tuple(int(v) for v in value)


def _conv_args(path: str, layer: str, inputs: Array, features: int,
               kernel_size: Any, strides: Any, padding: Any,
               input_dilation: Any, kernel_dilation: Any, dtype: Any):
  """Checks and normalizes the arguments shared by Conv and ConvTranspose;
  a single example gets a batch axis."""
  where = f'{path}: {layer}'
  _check_features(path, layer, features)
  kernel_size = utils.as_tuple(kernel_size)
  if not kernel_size or any(
      not isinstance(k, (int, np.integer)) or k <= 0 for k in kernel_size):
    raise ValueError(f'{path}: {layer} needs kernel_size as a tuple of '
                     f'positive ints, got {kernel_size!r}')
  kernel_size = tuple(int(k) for k in kernel_size)
  n = len(kernel_size)
  inputs = jnp.asarray(inputs, dtype)
  if inputs.ndim not in (n + 1, n + 2):
    raise ValueError(
        f'{where} with kernel_size {kernel_size} expects inputs of '
        f'shape (batch, {n} spatial dims, features), i.e. rank {n + 2} (or '
        f'rank {n + 1} for a single unbatched example), got shape '
        f'{inputs.shape}; reshape the input or give a kernel_size with one '
        'entry per spatial dimension')
  unbatched = inputs.ndim == n + 1
  strides = _positive_ints(strides, n, 'strides', where)
  input_dilation = _positive_ints(input_dilation, n, 'input_dilation', where)
  kernel_dilation = _positive_ints(kernel_dilation, n, 'kernel_dilation',
                                   where)
  padding = utils.check_padding(padding, n, where)
  # A kernel larger than the padded input gives an empty output.
  pads = ((0, 0),) * n if padding == 'VALID' else padding
  if not isinstance(pads, str):
    for i, (d, (lo, hi), k, di, dk) in enumerate(zip(
        inputs.shape[-n - 1:-1], pads, kernel_size, input_dilation,
        kernel_dilation)):
      size = max(d - 1, 0) * di + min(d, 1) + lo + hi
      extent = (k - 1) * dk + 1
      if size < extent:
        raise ValueError(
            f'{where}: the kernel spans {extent} positions along spatial dim '
            f'{i} (kernel_size={kernel_size}, kernel_dilation='
            f'{kernel_dilation}) but the input of shape '
            f'{inputs.shape} has {size} there, after input dilation and '
            f'padding={pads}, so the output would be empty; '
            "use padding='SAME', a smaller kernel or a larger input")
  if unbatched:
    inputs = inputs[None]
  return (inputs, unbatched, kernel_size, strides, padding, input_dilation,
          kernel_dilation)


class Conv(Module):
  """An N-d convolution (`lax.conv_general_dilated`), channels last.

  Parameters: `kernel` of shape
  `kernel_size + (in_features // feature_group_count, features)` and `bias` of
  shape `(features,)`.
  """

  def apply(self, inputs: Array, features: int, kernel_size: Sequence[int],
            strides: Optional[Sequence[int]] = None, padding: Any = 'SAME',
            input_dilation: Optional[Sequence[int]] = None,
            kernel_dilation: Optional[Sequence[int]] = None,
            feature_group_count: int = 1, bias: bool = True,
            dtype: Any = jnp.float32, precision: Any = None,
            kernel_init: Initializer = default_kernel_init,
            bias_init: Initializer = initializers.zeros,
            param_dtype: Any = jnp.float32) -> Array:
    """Applies the convolution.

    Arguments:
      inputs: array of shape `(batch, spatial..., in_features)` with
        `len(kernel_size)` spatial dims, or `(spatial..., in_features)` for
        one unbatched example.
      features: the number of filters (output features).
      kernel_size: tuple of `n` ints (an int means a 1-d kernel).
      strides: `n` ints (default all 1).
      padding: `'SAME'` (default), `'VALID'`, or `n` `(low, high)` pairs.
      input_dilation: `n` ints (default None, no dilation); dilating the input
        by `d` is a transposed convolution with stride `d`.
      kernel_dilation: `n` ints (default None): atrous convolution.
      feature_group_count: split the input features into that many groups
        (default 1); `in_features` and `features` must be divisible by it.
      bias, dtype, precision, kernel_init, bias_init, param_dtype: see the
        module docstring.
    Returns:
      An array of shape `(batch, out_spatial..., features)` (no batch axis
      for an unbatched input).
    """
    (inputs, unbatched, kernel_size, strides, padding, input_dilation,
     kernel_dilation) = _conv_args(
         self.path, 'Conv', inputs, features, kernel_size, strides, padding,
         input_dilation, kernel_dilation, dtype)
    in_features = inputs.shape[-1]
    groups = feature_group_count
    if groups < 1 or in_features % groups or features % groups:
      raise ValueError(
          f'{self.path}: Conv: feature_group_count={groups} must divide both '
          f'the input features ({in_features}) and the output features '
          f'({features})')
    kernel = utils.param(self, 'kernel',
                         kernel_size + (in_features // groups, features),
                         kernel_init, param_dtype)
    y = lax.conv_general_dilated(
        inputs, jnp.asarray(kernel, dtype), strides, padding,
        lhs_dilation=input_dilation, rhs_dilation=kernel_dilation,
        dimension_numbers=_conv_dimension_numbers(inputs.ndim),
        feature_group_count=groups, precision=precision)
    if unbatched:
      y = y[0]
    if bias:
      y = _add_bias(self, y, features, bias_init, param_dtype, dtype)
    return y


class ConvTranspose(Module):
  """An N-d transposed convolution (`lax.conv_transpose`), channels last.

  Parameters: `kernel` of shape `kernel_size + (in_features, features)` and
  `bias` of shape `(features,)`. The kernel is not flipped
  (`transpose_kernel=False`), as in `lax.conv_transpose`.
  """

  def apply(self, inputs: Array, features: int, kernel_size: Sequence[int],
            strides: Optional[Sequence[int]] = None, padding: Any = 'SAME',
            kernel_dilation: Optional[Sequence[int]] = None,
            bias: bool = True, dtype: Any = jnp.float32,
            precision: Any = None,
            kernel_init: Initializer = default_kernel_init,
            bias_init: Initializer = initializers.zeros,
            param_dtype: Any = jnp.float32) -> Array:
    """Applies the transposed convolution.

    Arguments:
      inputs: array of shape `(batch, spatial..., in_features)`, or without
        the batch axis for one example.
      features: the number of output features.
      kernel_size: tuple of `n` ints (an int means a 1-d kernel).
      strides: `n` ints (default all 1); the output is about `strides` times
        larger than the input.
      padding: `'SAME'` (default: output size `input * stride`), `'VALID'`,
        or `n` `(low, high)` pairs, as in `lax.conv_transpose`.
      kernel_dilation: `n` ints (default None).
      bias, dtype, precision, kernel_init, bias_init, param_dtype: see the
        module docstring.
    Returns:
      An array of shape `(batch, out_spatial..., features)`.
    """
    # The strides dilate the input.
    inputs, unbatched, kernel_size, strides, padding, _, kernel_dilation = (
        _conv_args(self.path, 'ConvTranspose', inputs, features, kernel_size,
                   strides, padding, strides, kernel_dilation, dtype))
    kernel = utils.param(self, 'kernel',
                         kernel_size + (inputs.shape[-1], features),
                         kernel_init, param_dtype)
    y = lax.conv_transpose(
        inputs, jnp.asarray(kernel, dtype), strides, padding,
        rhs_dilation=kernel_dilation,
        dimension_numbers=_conv_dimension_numbers(inputs.ndim),
        precision=precision)
    if unbatched:
      y = y[0]
    if bias:
      y = _add_bias(self, y, features, bias_init, param_dtype, dtype)
    return y


class Embed(Module):
  """A lookup table from integers `[0, num_embeddings)` to vectors.

  Parameter: `embedding` of shape `(num_embeddings, features)`. The module
  method `attend(query)` computes `query @ embedding.T` (tied output logits).
  """

  def apply(self, inputs: Array, num_embeddings: int, features: int,
            embedding_init: Initializer = default_embed_init,
            dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> Array:
    """Embeds integer inputs.

    Arguments:
      inputs: integer array of any shape (all axes are batch axes).
      num_embeddings: the vocabulary size.
      features: the embedding size.
      embedding_init: initializer of the table (default
        `variance_scaling(1.0, 'fan_in', 'normal', out_axis=0)`).
      dtype: the dtype of the output (default float32).
      param_dtype: the storage dtype of the table (default float32).
    Returns:
      An array of shape `inputs.shape + (features,)`. Ids index the table as
      in `embedding[inputs]`: negative ids count from the end and ids past
      the end are clamped to the last row (JAX indexing rules).
    """
    inputs = jnp.asarray(inputs)
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError(
          f'{self.path}: Embed expects integer input (token ids), got '
          f'{inputs.dtype}; cast the ids with .astype(jnp.int32)')
    embedding = utils.param(self, 'embedding', (num_embeddings, features),
                            embedding_init, param_dtype)
    return jnp.asarray(embedding, dtype)[inputs]

  @module_method
  def attend(self, query: Array, dtype: Any = jnp.float32,
             precision: Any = None, **unused_kwargs) -> Array:
    """The inner products of `query` with every embedding.

    Arguments:
      query: array of shape `(..., features)`.
      dtype: the computation dtype (default float32).
      precision: `lax.Precision` of the matmul (default None).
      **unused_kwargs: the hyper-parameters of `apply`, ignored.
    Returns:
      An array of shape `(..., num_embeddings)`.
    """
    del unused_kwargs
    embedding = jnp.asarray(self.get_param('embedding'), dtype)
    query = jnp.asarray(query, dtype)
    if query.ndim == 0 or query.shape[-1] != embedding.shape[-1]:
      raise ValueError(
          f'{self.path}: Embed.attend expects a query of shape (..., '
          f'{embedding.shape[-1]}) to match the embedding features, got '
          f'{query.shape}')
    return lax.dot_general(query, embedding,
                           (((query.ndim - 1,), (1,)), ((), ())),
                           precision=precision)
