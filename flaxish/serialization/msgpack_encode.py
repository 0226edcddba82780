"""Writing the msgpack wire format (see `wire_format`), one leaf at a time.

`MsgpackWriter` streams an object to a `write` callable: small items are
batched, and each array's bytes are handed over as a memoryview of the array
itself, never copied. So writing a tree to a file adds memory for one array
at a time at most (the host copy of a device array), not for the whole tree.
The bytes are exactly what `msgpack.packb` with flax's extension hook gives.
"""
import struct
from typing import Any, Callable

import msgpack
import numpy as np

from flaxish.serialization import host, wire_format
from flaxish.serialization.dtypes import check_dtype, dtype_to_name
from flaxish.serialization.paths import display_path, join_path

__all__ = ['MsgpackWriter', 'msgpack_serialize']

_FIXEXT = {1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}
_BATCH_BYTES = 1 << 16
_KEY_TYPES = (str, int, bytes, float, bool, type(None))
_SCALAR_TYPES = (str, int, bytes, float, bool, type(None))


def _ext_header(code: int, length: int) -> bytes:
  if length in _FIXEXT:
    return bytes((_FIXEXT[length], code))
  if length < 1 << 8:
    return struct.pack('>BBb', 0xc7, length, code)
  if length < 1 << 16:
    return struct.pack('>BHb', 0xc8, length, code)
  return struct.pack('>BIb', 0xc9, length, code)


def _bin_header(length: int) -> bytes:
  if length < 1 << 8:
    return struct.pack('>BB', 0xc4, length)
  if length < 1 << 16:
    return struct.pack('>BH', 0xc5, length)
  return struct.pack('>BI', 0xc6, length)


def _byte_view(arr: np.ndarray) -> memoryview:
  """The bytes of a C-contiguous array, without a copy."""
  return memoryview(arr.reshape(-1).view(np.uint8))


class MsgpackWriter:
  """Writes objects in the wire format to `write`, streaming array bytes.

  Arguments:
    write: called with each piece (bytes, or a memoryview of an array's
      memory that is only valid during the call), in order.
  """

  def __init__(self, write: Callable[[Any], Any]):
    self._write = write
    self._batch = bytearray()
    self._packer = msgpack.Packer(use_bin_type=True, strict_types=True,
                                  autoreset=True, buf_size=4096)

  def pack(self, obj: Any) -> None:
    """Writes `obj` (dicts, lists, tuples, scalars, arrays) and flushes."""
    self._pack(obj, '')
    self.flush()

  def flush(self) -> None:
    """Hands the batched small items to `write`."""
    if self._batch:
      self._write(bytes(self._batch))
      self._batch.clear()

  def _small(self, data: bytes) -> None:
    self._batch += data
    if len(self._batch) >= _BATCH_BYTES:
      self.flush()

  def _large(self, view: memoryview) -> None:
    if len(view) < _BATCH_BYTES:
      self._small(view)
      return
    self.flush()
    self._write(view)

  def _pack(self, obj: Any, path: str) -> None:
    ty = type(obj)
    if ty is dict:
      self._small(self._packer.pack_map_header(len(obj)))
      for key, value in obj.items():
        if type(key) not in _KEY_TYPES:
          raise TypeError(
              f'cannot serialize the dict at {display_path(path)}: its key '
              f'{key!r} is a {type(key).__name__}; state dict keys are str')
        self._small(self._packer.pack(key))
        self._pack(value, join_path(path, key))
    elif ty is list or ty is tuple:
      self._small(self._packer.pack_array_header(len(obj)))
      for i, value in enumerate(obj):
        self._pack(value, join_path(path, i))
    elif ty in _SCALAR_TYPES:
      try:
        self._small(self._packer.pack(obj))
      except OverflowError as e:
        raise ValueError(f'cannot serialize the int at {display_path(path)}: '
                         f'{obj} does not fit in 64 bits') from e
    elif ty is complex:
      payload = msgpack.packb((obj.real, obj.imag))
      self._small(_ext_header(wire_format.COMPLEX, len(payload)) + payload)
    elif host.is_array(obj):
      self._pack_array(obj, path)
    else:
      raise TypeError(
          f'cannot serialize the {ty.__module__}.{ty.__qualname__} at '
          f'{display_path(path)}: only dicts, lists, tuples, arrays and '
          'Python scalars can be written. Convert the tree with '
          'to_state_dict (or use to_bytes), and register custom classes '
          'with register_serialization_state.')

  def _pack_array(self, x: Any, path: str) -> None:
    code = wire_format.NPSCALAR if isinstance(x, np.generic) else (
        wire_format.NDARRAY)
    arr = host.to_numpy(x)
    check_dtype(arr.dtype, display_path(path))
    if not arr.dtype.isnative:
      arr = arr.astype(arr.dtype.newbyteorder('='))
    if arr.nbytes > wire_format.MAX_CHUNK_SIZE:
      self._pack_chunked(arr)
      return
    if not arr.flags.c_contiguous:
      arr = np.array(arr, order='C')
    self._pack_ndarray(arr, code)

  def _pack_ndarray(self, arr: np.ndarray, code: int) -> None:
    nbytes = arr.nbytes
    prefix = (b'\x93' + self._packer.pack([int(d) for d in arr.shape]) +
              self._packer.pack(dtype_to_name(arr.dtype)) + _bin_header(nbytes))
    self._small(_ext_header(code, len(prefix) + nbytes) + prefix)
    if nbytes:
      self._large(_byte_view(arr))

  def _pack_chunked(self, arr: np.ndarray) -> None:
    if not arr.flags.c_contiguous:
      arr = np.array(arr, order='C')  # one copy, of this array only
    flat = arr.reshape(-1)
    per_chunk = max(1, wire_format.MAX_CHUNK_SIZE // arr.dtype.itemsize)
    starts = range(0, flat.size, per_chunk)
    pack = self._packer.pack
    header = [self._packer.pack_map_header(3), pack(wire_format.CHUNKED_MARKER),
              pack(True), pack('shape'),
              self._packer.pack_map_header(arr.ndim)]
    header += [pack(str(i)) + pack(int(d)) for i, d in enumerate(arr.shape)]
    header += [pack('chunks'), self._packer.pack_map_header(len(starts))]
    self._small(b''.join(header))
    for i, start in enumerate(starts):
      self._small(pack(str(i)))
      self._pack_ndarray(flat[start:start + per_chunk], wire_format.NDARRAY)


def msgpack_serialize(pytree: Any, in_place: bool = False) -> bytes:
  """The msgpack bytes of a tree of dicts, lists, scalars and arrays.

  Low level: for Models, Optimizers and other classes use `to_bytes`, which
  converts to a state dict first. Arrays larger than
  `wire_format.MAX_CHUNK_SIZE` bytes are written in chunks.

  Arguments:
    pytree: nested dicts (str keys), lists, tuples, Python scalars, NumPy and
      JAX arrays.
    in_place: accepted for compatibility; the input is never modified.
  Returns:
    The bytes.
  """
  del in_place
  pieces = []
  MsgpackWriter(pieces.append).pack(pytree)
  return b''.join(pieces)
