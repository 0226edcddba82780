"""Private helpers shared by the layers: parameter dtypes and axis handling."""
from typing import Any, Callable, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

Initializer = Callable[..., Any]


def init_dtype(param_dtype: Any) -> Any:
  """The dtype initializers compute in: `param_dtype`, at least float32.

  Initializers draw in float32 (or wider) and the result is then cast to
  `param_dtype`, so bf16/fp16 storage gets the same values rounded, and
  initializers that need float32 (e.g. `orthogonal`'s QR) keep working.
  """
  return jnp.promote_types(param_dtype, jnp.float32)


def param(module, name: str, shape: Sequence[int], initializer: Initializer,
          param_dtype: Any) -> Any:
  """`module.param` whose new value is stored as `param_dtype`."""
  return module.param(
      name, tuple(shape),
      lambda key, shape: jnp.asarray(initializer(key, shape), param_dtype))


def as_tuple(x: Any) -> Tuple[Any, ...]:
  """An int (or other scalar) becomes a 1-tuple; a sequence becomes a tuple."""
  if isinstance(x, (int, np.integer)):
    return (int(x),)
  return tuple(x)


def normalize_axes(axes: Sequence[int], ndim: int, where: str,
                   what: str = 'axis') -> Tuple[int, ...]:
  """Makes axes non-negative; raises a ValueError naming `where` if invalid."""
  out = []
  for ax in axes:
    if not isinstance(ax, (int, np.integer)) or not -ndim <= ax < ndim:
      raise ValueError(f'{where}: {what} {tuple(axes)} is out of range for an '
                       f'input of rank {ndim}')
    out.append(int(ax) % ndim)
  if len(set(out)) != len(out):
    raise ValueError(f'{where}: {what} {tuple(axes)} has repeated axes')
  return tuple(out)


def spatial_tuple(value: Any, n: int, name: str, where: str,
                  default: int = 1) -> Tuple[int, ...]:
  """None -> `(default,) * n`; int -> `(value,) * n`; else a length-n tuple."""
  if value is None:
    return (default,) * n
  if isinstance(value, (int, np.integer)):
    return (int(value),) * n
  value = tuple(value)
  if len(value) != n:
    raise ValueError(f'{where}: {name}={value} must have one entry per '
                     f'spatial dimension ({n})')
  return value


def check_padding(padding: Any, n: int, where: str) -> Any:
  """Checks a padding argument: 'SAME', 'VALID' or n `(low, high)` pairs."""
  if isinstance(padding, str):
    if padding.upper() not in ('SAME', 'VALID', 'SAME_LOWER'):
      raise ValueError(f"{where}: padding must be 'SAME', 'VALID' or a "
                       f'sequence of {n} (low, high) pairs, got {padding!r}')
    return padding.upper()
  try:
    pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: padding must be 'SAME', 'VALID' or a "
                     f'sequence of {n} (low, high) pairs, got {padding!r}'
                     ) from None
  if len(pairs) != n:
    raise ValueError(f'{where}: padding {padding!r} has {len(pairs)} (low, '
                     f'high) pairs but the input has {n} spatial dimensions')
  return pairs
