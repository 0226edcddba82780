"""The product of `Dense` and `DenseGeneral`, with a CPU-friendly gradient.

`dense_dot(inputs, kernel, axis)` contracts the `axis` dimensions of
`inputs` with the leading dimensions of `kernel`, as `lax.dot_general` does;
the result has shape `other_input_dims + kernel.shape[len(axis):]`.

Why not `lax.dot_general` alone: the kernel's gradient is `x^T @ dy`, a
product that contracts over all the tokens (or examples). XLA:CPU (jaxlib
0.10 and 0.11) runs that product about 1.35x slower than `x^T` written out
first and then multiplied, and the difference is a fifth of a small
Transformer's CPU train step (benchmarks/README.md, "CPU defaults"). So on
CPU the tangent with respect to the kernel is built from `x^T` kept behind
`lax.optimization_barrier`, which XLA cannot fold back into the product;
transposing that tangent gives the fast product. Only when JAX's default
backend is the CPU, decided while tracing: GPU and TPU libraries take
transposed operands for free, and an extra copy would only cost. (Not
`lax.platform_dependent`: differentiating through it keeps every branch's
saved values, so a `lax.scan` on a GPU would carry zeros of `x^T`'s size
per step.) A program traced on a CPU-only machine for a GPU, or placed on
the CPU of a GPU machine, gets the other platform's form: the numbers are
the same either way.

The rule is a `jax.custom_jvp`, so forward-mode, reverse-mode and higher
derivatives all work; only the placement of one transpose changes, not the
arithmetic of any product.
"""
import functools
import operator
from typing import Any, Sequence

import jax
from jax import lax
from jax.custom_derivatives import SymbolicZero
import jax.numpy as jnp
import numpy as np

from flaxish.nn.utils import is_tracer

__all__ = ['dense_dot']

Array = Any


def dense_dot(inputs: Array, kernel: Array, axis: Sequence[int],
              precision: Any = None, plain: bool = False) -> Array:
  """`inputs` contracted over `axis` with the leading axes of `kernel`.

  Arguments:
    inputs: an array of any rank.
    kernel: an array of shape `[inputs.shape[a] for a in axis] + features`.
    axis: distinct input dimensions, non-negative, in the kernel's order.
    precision: `lax.Precision` of the product (default None).
    plain: take `lax.dot_general` whatever the backend (default False); the
      layers pass True while initializing, where nothing is trained.
  Returns:
    An array of shape `other_input_dims + features` (the dimensions of
    `inputs` not in `axis`, in order), in the dtype `lax.dot_general` gives.
  """
  axis = tuple(int(a) for a in axis)
  if (plain or not (is_tracer(inputs) or is_tracer(kernel)) or
      not _cpu_form()):
    # The custom rule costs about 0.3 ms per call, eager or traced (0.03 ms
    # plain); it pays only in traced CPU programs that differentiate.
    return _plain(inputs, kernel, axis, precision)
  return _dense_dot(inputs, kernel, axis, precision)


def _plain(inputs, kernel, axis, precision):
  contract = (axis, tuple(range(len(axis))))
  return lax.dot_general(inputs, kernel, (contract, ((), ())),
                         precision=precision)


def _kernel_tangent(inputs, kernel_dot, axis, precision):
  """`inputs` (contracted over `axis`) times the kernel's tangent, through a
  written-out `(n_in, n_rows)` transpose of `inputs` (the CPU form: the rule
  is only traced when `_cpu_form()`)."""
  free = tuple(a for a in range(inputs.ndim) if a not in axis)
  n_in = int(np.prod([inputs.shape[a] for a in axis], dtype=np.int64))
  rows = tuple(inputs.shape[a] for a in free)
  x_t = lax.optimization_barrier(
      lax.transpose(inputs, axis + free).reshape(n_in, -1))
  out = lax.dot_general(x_t, kernel_dot.reshape(n_in, -1),
                        (((0,), (0,)), ((), ())), precision=precision)
  return out.reshape(rows + kernel_dot.shape[len(axis):])


def _cpu_form() -> bool:
  """Whether traced products take the custom rule (default backend CPU)."""
  return jax.default_backend() == 'cpu'


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _dense_dot(inputs, kernel, axis, precision):
  return _plain(inputs, kernel, axis, precision)


@functools.partial(_dense_dot.defjvp, symbolic_zeros=True)
def _dense_dot_jvp(axis, precision, primals, tangents):
  inputs, kernel = primals
  inputs_dot, kernel_dot = tangents
  out = _dense_dot(inputs, kernel, axis, precision)
  terms = []
  if not isinstance(inputs_dot, SymbolicZero):
    terms.append(_dense_dot(inputs_dot, kernel, axis, precision))
  if not isinstance(kernel_dot, SymbolicZero):
    terms.append(_kernel_tangent(inputs, kernel_dot, axis, precision))
  if not terms:
    return out, jnp.zeros_like(out)
  return out, functools.reduce(operator.add, terms)
