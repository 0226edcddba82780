"""Tests for dtype names on the wire (flaxish.serialization.dtypes)."""
import ml_dtypes
import numpy as np
import pytest

from flaxish.serialization import dtypes


@pytest.mark.parametrize('dtype', [np.float32, np.bool_, np.complex64,
                                   ml_dtypes.bfloat16, ml_dtypes.float8_e5m2,
                                   ml_dtypes.int4, 'datetime64[ns]'])
def test_names_round_trip(dtype):
  dtype = np.dtype(dtype)
  assert dtypes.dtype_to_name(dtype) == dtype.name
  assert dtypes.dtype_from_name(dtype.name) == dtype
  assert dtypes.dtype_from_name(dtype.name.encode()) == dtype


def test_unparseable_names_fall_back_to_dtype_str():
  dtype = np.dtype('U3')
  assert dtypes.dtype_to_name(dtype) == '<U3'
  assert dtypes.dtype_from_name('<U3') == dtype


def test_unknown_names_are_an_error():
  with pytest.raises(ValueError, match='unknown array dtype "float99"'):
    dtypes.dtype_from_name('float99')


def test_object_and_structured_dtypes_are_refused():
  with pytest.raises(TypeError, match='/p/q.*Python objects'):
    dtypes.check_dtype(np.dtype(object), '/p/q')
  with pytest.raises(TypeError, match='/r.*structured dtype'):
    dtypes.check_dtype(np.dtype([('a', np.int8)]), '/r')
  dtypes.check_dtype(np.dtype(ml_dtypes.bfloat16), '/ok')  # kind 'V', fine
