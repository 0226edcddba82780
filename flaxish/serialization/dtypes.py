"""Array dtypes on the wire: names, the ml_dtypes extensions, what is refused.

An array's dtype is stored by name (`dtype.name`: 'float32', 'bfloat16',
'float8_e4m3fn', ...), as flax has always written it; readers also accept the
`dtype.str` form ('<f4'). Every numeric NumPy dtype and every dtype from
`ml_dtypes` (bfloat16, the float8/float6/float4 types, int4, ...) round-trips.
Object dtypes and structured dtypes (records with fields) are refused: their
bytes do not describe the values.
"""
from typing import Dict, Union

import ml_dtypes
import numpy as np

__all__ = ['dtype_to_name', 'dtype_from_name', 'check_dtype']


def _ml_dtypes_by_name() -> Dict[str, np.dtype]:
  table = {}
  for name in dir(ml_dtypes):
    value = getattr(ml_dtypes, name)
    if isinstance(value, type) and issubclass(value, np.generic):
      dtype = np.dtype(value)
      table[dtype.name] = dtype
  return table


_ML_DTYPES = _ml_dtypes_by_name()


def dtype_from_name(name: Union[str, bytes]) -> np.dtype:
  """The dtype written as `name` ('float32', 'bfloat16', '<f4', ...).

  Raises:
    ValueError: `name` is not a dtype this NumPy and ml_dtypes know.
  """
  if isinstance(name, (bytes, bytearray, memoryview)):
    name = bytes(name).decode('ascii', 'replace')
  dtype = _ML_DTYPES.get(name)
  if dtype is not None:
    return dtype
  try:
    return np.dtype(name)
  except TypeError as e:
    raise ValueError(f'unknown array dtype "{name}" in the data (written by a '
                     'newer NumPy or ml_dtypes?)') from e


def dtype_to_name(dtype: np.dtype) -> str:
  """The name an array of `dtype` is written with (normally `dtype.name`)."""
  name = dtype.name
  try:
    if dtype_from_name(name) == dtype:
      return name
  except ValueError:
    pass
  return dtype.str  # e.g. fixed-width strings: 'str256' is not parseable


def check_dtype(dtype: np.dtype, path: str) -> None:
  """Raises a TypeError naming `path` for object and structured dtypes."""
  if dtype.hasobject:
    raise TypeError(
        f'cannot serialize the array at {path or "/"}: its dtype is '
        f'{dtype} (Python objects); convert it to a numeric dtype first')
  if dtype.fields is not None:
    raise TypeError(
        f'cannot serialize the array at {path or "/"}: it has the structured '
        f'dtype {dtype}; store each field as its own array instead')
