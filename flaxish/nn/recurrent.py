"""Recurrent cells: `LSTMCell`, `GRUCell`, `ConvLSTM`.

A cell maps `(carry, inputs)` for one time step to `(new_carry, output)`, the
signature `lax.scan` expects:

    _, params = nn.LSTMCell.init(rng, carry, xs[0])
    cell = nn.Model(nn.LSTMCell, params)
    carry = nn.LSTMCell.initialize_carry(rng, (batch,), hidden)
    carry, ys = jax.lax.scan(cell, carry, xs)      # xs: [time, batch, in]

Inside a module, declare the cell once with `.shared()` and scan over it,
e.g. with `jax_utils.scan_in_dim(step, carry, xs, axis=1)`.

The new carry keeps the dtype of the given carry (so `lax.scan` sees a fixed
carry type whatever the computation `dtype` is). Arguments shared by the
cells: `dtype` (default float32), the computation dtype; `param_dtype`
(default float32), the storage dtype of the parameters; `kernel_init`
(default lecun_normal) and `recurrent_kernel_init` (default orthogonal), the
initializers of the input and hidden kernels; `bias_init` (default zeros);
`gate_fn` (default sigmoid) and `activation_fn` (default tanh), the gate and
the cell/candidate nonlinearities.
"""
import abc
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from flaxish.nn import activation
from flaxish.nn import initializers
from flaxish.nn import linear
from flaxish.nn.modules import Module

__all__ = ['RNNCellBase', 'LSTMCell', 'GRUCell', 'ConvLSTM']

Array = Any
Initializer = Callable[..., Array]


def _check_carry(path: str, cell: str, h: Array, inputs: Array) -> None:
  if jnp.ndim(h) < 1 or jnp.ndim(inputs) < 1:
    raise ValueError(f'{path}: {cell} expects a carry and inputs with a '
                     f'feature axis, got shapes {jnp.shape(h)} and '
                     f'{jnp.shape(inputs)}')
  if jnp.shape(h)[:-1] != jnp.shape(inputs)[:-1]:
    raise ValueError(
        f'{path}: {cell}: the carry {jnp.shape(h)} and the inputs '
        f'{jnp.shape(inputs)} must have the same batch dims; build the carry '
        f'with {cell}.initialize_carry(rng, batch_dims, size)')


def _check_pair(path: str, cell: str, c: Array, h: Array) -> None:
  if jnp.shape(c) != jnp.shape(h):
    raise ValueError(
        f'{path}: {cell}: the carry (c, h) must be two arrays of the same '
        f'shape, got c of shape {jnp.shape(c)} and h of shape '
        f'{jnp.shape(h)}; build it with {cell}.initialize_carry(rng, '
        'batch_dims, size)')


class RNNCellBase(Module):
  """Base class of the recurrent cells."""

  @staticmethod
  @abc.abstractmethod
  def initialize_carry(rng: Any, batch_dims: Tuple[int, ...], size: Any,
                       init_fn: Initializer = initializers.zeros) -> Any:
    """The initial carry of the cell.

    Arguments:
      rng: a PRNG key, given to `init_fn`.
      batch_dims: the batch shape, e.g. `(batch,)`.
      size: the number of hidden features.
      init_fn: `init_fn(key, shape)` (default zeros).
    Returns:
      The carry.
    """


def _dense_pair(inputs: Array, h: Array, input_bias: bool, kernel_init,
                recurrent_kernel_init, bias_init, dtype, param_dtype):
  """`Dense` partials on the inputs and on the hidden state `h`."""
  dense = linear.Dense.partial(features=h.shape[-1], bias_init=bias_init,
                               dtype=dtype, param_dtype=param_dtype)
  return (dense.partial(inputs=inputs, bias=input_bias,
                        kernel_init=kernel_init),
          dense.partial(inputs=h, bias=not input_bias,
                        kernel_init=recurrent_kernel_init))


def _carry_pair(rng: Any, shape: Tuple[int, ...], init_fn: Initializer):
  key_c, key_h = jax.random.split(rng)
  return init_fn(key_c, shape), init_fn(key_h, shape)


class LSTMCell(RNNCellBase):
  r"""A long short-term memory cell.

      i = gate_fn(W_ii x + W_hi h + b_hi)
      f = gate_fn(W_if x + W_hf h + b_hf)
      g = activation_fn(W_ig x + W_hg h + b_hg)
      o = gate_fn(W_io x + W_ho h + b_ho)
      c' = f * c + i * g
      h' = o * activation_fn(c')

  Submodules (Dense): `ii, if, ig, io` on the input (no bias) and
  `hi, hf, hg, ho` on the hidden state (with bias). The carry is `(c, h)`.
  """

  def apply(self, carry: Tuple[Array, Array], inputs: Array,
            gate_fn: Callable[[Array], Array] = activation.sigmoid,
            activation_fn: Callable[[Array], Array] = activation.tanh,
            kernel_init: Initializer = linear.default_kernel_init,
            recurrent_kernel_init: Initializer = initializers.orthogonal(),
            bias_init: Initializer = initializers.zeros,
            dtype: Any = jnp.float32,
            param_dtype: Any = jnp.float32) -> Tuple[Any, Array]:
    """One LSTM step.

    Arguments:
      carry: `(c, h)`, each `(*batch, hidden)`, e.g. from `initialize_carry`.
      inputs: `(*batch, in_features)`.
      gate_fn, activation_fn, kernel_init, recurrent_kernel_init, bias_init,
        dtype, param_dtype: see the module docstring.
    Returns:
      `((new_c, new_h), new_h)`.
    """
    c, h = carry
    _check_pair(self.path, 'LSTMCell', c, h)
    _check_carry(self.path, 'LSTMCell', h, inputs)
    dense_i, dense_h = _dense_pair(inputs, h, False, kernel_init,
                                   recurrent_kernel_init, bias_init, dtype,
                                   param_dtype)
    i = gate_fn(dense_i(name='ii') + dense_h(name='hi'))
    f = gate_fn(dense_i(name='if') + dense_h(name='hf'))
    g = activation_fn(dense_i(name='ig') + dense_h(name='hg'))
    o = gate_fn(dense_i(name='io') + dense_h(name='ho'))
    new_c = f * jnp.asarray(c, dtype) + i * g
    new_h = o * activation_fn(new_c)
    new_c, new_h = new_c.astype(c.dtype), new_h.astype(h.dtype)
    return (new_c, new_h), new_h

  @staticmethod
  def initialize_carry(rng: Any, batch_dims: Tuple[int, ...], size: int,
                       init_fn: Initializer = initializers.zeros
                       ) -> Tuple[Array, Array]:
    """`(c, h)`, each of shape `batch_dims + (size,)` (zeros by default);
    `rng` is split between them."""
    return _carry_pair(rng, tuple(batch_dims) + (size,), init_fn)


class GRUCell(RNNCellBase):
  r"""A gated recurrent unit cell.

      r = gate_fn(W_ir x + b_ir + W_hr h)
      z = gate_fn(W_iz x + b_iz + W_hz h)
      n = activation_fn(W_in x + b_in + r * (W_hn h + b_hn))
      h' = (1 - z) * n + z * h

  Submodules (Dense): `ir, iz, in` on the input (with bias), `hr, hz` on the
  hidden state (no bias) and `hn` (with bias). The carry is `h`.
  """

  def apply(self, carry: Array, inputs: Array,
            gate_fn: Callable[[Array], Array] = activation.sigmoid,
            activation_fn: Callable[[Array], Array] = activation.tanh,
            kernel_init: Initializer = linear.default_kernel_init,
            recurrent_kernel_init: Initializer = initializers.orthogonal(),
            bias_init: Initializer = initializers.zeros,
            dtype: Any = jnp.float32,
            param_dtype: Any = jnp.float32) -> Tuple[Array, Array]:
    """One GRU step.

    Arguments:
      carry: `h`, `(*batch, hidden)`, e.g. from `initialize_carry`.
      inputs: `(*batch, in_features)`.
      gate_fn, activation_fn, kernel_init, recurrent_kernel_init, bias_init,
        dtype, param_dtype: see the module docstring.
    Returns:
      `(new_h, new_h)`.
    """
    h = carry
    _check_carry(self.path, 'GRUCell', h, inputs)
    dense_i, dense_h = _dense_pair(inputs, h, True, kernel_init,
                                   recurrent_kernel_init, bias_init, dtype,
                                   param_dtype)
    r = gate_fn(dense_i(name='ir') + dense_h(name='hr'))
    z = gate_fn(dense_i(name='iz') + dense_h(name='hz'))
    n = activation_fn(dense_i(name='in') + r * dense_h(name='hn', bias=True))
    new_h = ((1. - z) * n + z * jnp.asarray(h, dtype)).astype(h.dtype)
    return new_h, new_h

  @staticmethod
  def initialize_carry(rng: Any, batch_dims: Tuple[int, ...], size: int,
                       init_fn: Initializer = initializers.zeros) -> Array:
    """`h` of shape `batch_dims + (size,)` (zeros by default)."""
    return init_fn(rng, tuple(batch_dims) + (size,))


class ConvLSTM(RNNCellBase):
  r"""A convolutional LSTM cell (arxiv.org/abs/1506.04214).

      i, g, f, o = split(Conv_ih(x) + Conv_hh(h), 4)   # along features
      f = sigmoid(f + 1)        # +1: forget less at the start of training
      c' = f * c + sigmoid(i) * tanh(g)
      h' = sigmoid(o) * tanh(c')

  Submodules (Conv, `4 * features` outputs): `ih` on the input and `hh` on
  the hidden state. The carry is `(c, h)`, each `(batch, spatial...,
  features)`.
  """

  def apply(self, carry: Tuple[Array, Array], inputs: Array, features: int,
            kernel_size: Sequence[int],
            strides: Optional[Sequence[int]] = None, padding: Any = 'SAME',
            bias: bool = True, dtype: Any = jnp.float32,
            kernel_init: Initializer = linear.default_kernel_init,
            bias_init: Initializer = initializers.zeros,
            param_dtype: Any = jnp.float32) -> Tuple[Any, Array]:
    """One ConvLSTM step.

    Arguments:
      carry: `(c, h)`, each `(batch, spatial..., features)`.
      inputs: `(batch, spatial..., in_features)`.
      features: the number of hidden channels.
      kernel_size: the convolution window, one int per spatial dim.
      strides: the convolution strides (default all 1); the carry must have
        the spatial shape of the convolution output.
      padding: `'SAME'` (default), `'VALID'` or `(low, high)` pairs.
      bias: whether the convolutions have biases (default True).
      kernel_init, bias_init, dtype, param_dtype: see the module docstring
        (both convolutions).
    Returns:
      `((new_c, new_h), new_h)`.
    """
    c, h = carry
    _check_pair(self.path, 'ConvLSTM', c, h)
    if jnp.ndim(h) < 1 or jnp.shape(h)[-1] != features:
      raise ValueError(
          f'{self.path}: ConvLSTM: the carry has shape {jnp.shape(h)} but '
          f'features={features}; its last axis must be the features: build '
          'it with ConvLSTM.initialize_carry(rng, batch_dims, '
          'output_spatial_shape + (features,))')
    conv = linear.Conv.partial(
        features=4 * features, kernel_size=kernel_size, strides=strides,
        padding=padding, bias=bias, dtype=dtype, kernel_init=kernel_init,
        bias_init=bias_init, param_dtype=param_dtype)
    x_gates = conv(inputs, name='ih')
    h_gates = conv(h, name='hh', strides=None, padding='SAME')
    if x_gates.shape != h_gates.shape:
      raise ValueError(
          f'{self.path}: ConvLSTM: the input convolution gives '
          f'{x_gates.shape[:-1]} positions but the carry has '
          f'{h.shape[:-1]}; build the carry with ConvLSTM.initialize_carry('
          'rng, batch_dims, output_spatial_shape + (features,))')
    i, g, f, o = jnp.split(x_gates + h_gates, 4, axis=-1)
    f = activation.sigmoid(f + 1.)
    new_c = f * jnp.asarray(c, dtype) + activation.sigmoid(i) * jnp.tanh(g)
    new_h = activation.sigmoid(o) * jnp.tanh(new_c)
    new_c, new_h = new_c.astype(c.dtype), new_h.astype(h.dtype)
    return (new_c, new_h), new_h

  @staticmethod
  def initialize_carry(rng: Any, batch_dims: Tuple[int, ...],
                       size: Tuple[int, ...],
                       init_fn: Initializer = initializers.zeros
                       ) -> Tuple[Array, Array]:
    """`(c, h)`, each of shape `batch_dims + size` (zeros by default), where
    `size` is the spatial shape plus the features, e.g. `(h, w, 16)`."""
    return _carry_pair(rng, tuple(batch_dims) + tuple(size), init_fn)
