"""Independent reference code for the wire-format tests (no flaxish)."""
import ml_dtypes
import msgpack
import numpy as np

NUMPY_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                np.uint16, np.uint32, np.uint64, np.float16, np.float32,
                np.float64, np.complex64, np.complex128]
ML_DTYPES = [getattr(ml_dtypes, name) for name in (
    'bfloat16', 'float8_e4m3fn', 'float8_e4m3fnuz', 'float8_e4m3b11fnuz',
    'float8_e5m2', 'float8_e5m2fnuz', 'float8_e3m4', 'float8_e4m3',
    'float8_e8m0fnu', 'float6_e2m3fn', 'float6_e3m2fn', 'float4_e2m1fn',
    'int2', 'int4', 'uint2', 'uint4') if hasattr(ml_dtypes, name)]


def reference_pack(tree):
  """msgpack.packb with the flax extension hook, written independently."""
  def default(x):
    if isinstance(x, np.ndarray):
      payload = msgpack.packb((x.shape, x.dtype.name, x.tobytes('C')),
                              use_bin_type=True)
      return msgpack.ExtType(1, payload)
    if isinstance(x, np.generic):
      arr = np.asarray(x)
      return msgpack.ExtType(3, msgpack.packb(
          (arr.shape, arr.dtype.name, arr.tobytes()), use_bin_type=True))
    if isinstance(x, complex):
      return msgpack.ExtType(2, msgpack.packb((x.real, x.imag)))
    raise TypeError(type(x))
  return msgpack.packb(tree, default=default, strict_types=True)


def reference_unpack(data):
  """msgpack.unpackb; array extensions become their [shape, dtype, bytes]."""
  return msgpack.unpackb(
      data, ext_hook=lambda code, payload: msgpack.unpackb(payload))


def random_array(dtype, shape, seed=0):
  """Random bytes viewed as `dtype` (any bit pattern, NaNs included)."""
  dtype = np.dtype(dtype)
  n = int(np.prod(shape)) * dtype.itemsize
  raw = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
  if dtype == np.bool_:
    raw &= 1
  return raw.view(dtype).reshape(shape)


def assert_same_bits(a, b):
  assert a.dtype == b.dtype and a.shape == b.shape
  assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
