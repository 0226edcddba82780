"""A minimal protocol-buffer wire encoder (no protobuf package needed).

Only what the TensorBoard summaries need: each function returns the encoded
bytes of one field (key + payload); a message is the concatenation of its
fields, and a sub-message is a length-delimited field holding those bytes.
Fields are written even when they hold the proto3 default, which every
reader accepts (and which a `oneof` member such as `simple_value` needs).
"""
import struct

import numpy as np

__all__ = ['varint', 'int_field', 'double_field', 'float_field',
           'bytes_field', 'string_field', 'packed_doubles_field']

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
_UINT64_MASK = (1 << 64) - 1


def varint(n: int) -> bytes:
  """Base-128 varint of `n`; a negative `n` is written as its 64-bit
  two's complement (10 bytes), as protobuf does for int32 and int64."""
  n = int(n)
  if n < 0:
    n &= _UINT64_MASK
  out = bytearray()
  while n >= 0x80:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return varint((field << 3) | wire_type)


def int_field(field: int, n: int) -> bytes:
  """An int32/int64/uint64/enum/bool field (varint)."""
  return _key(field, _VARINT) + varint(n)


def double_field(field: int, x: float) -> bytes:
  """A `double` field (fixed64, little-endian)."""
  return _key(field, _FIXED64) + struct.pack('<d', float(x))


def float_field(field: int, x: float) -> bytes:
  """A `float` field (fixed32); values beyond float32 become +-inf."""
  with np.errstate(over='ignore'):
    value = np.asarray(x, dtype='<f4')
  return _key(field, _FIXED32) + value.tobytes()


def bytes_field(field: int, data: bytes) -> bytes:
  """A `bytes` or sub-message field (length-delimited)."""
  data = bytes(data)
  return _key(field, _LENGTH_DELIMITED) + varint(len(data)) + data


def string_field(field: int, text: str) -> bytes:
  """A `string` field, UTF-8 encoded."""
  return bytes_field(field, text.encode('utf-8'))


def packed_doubles_field(field: int, values) -> bytes:
  """A packed `repeated double` field."""
  return bytes_field(field, np.asarray(values, dtype='<f8').tobytes())
