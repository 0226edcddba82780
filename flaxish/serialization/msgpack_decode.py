"""Reading the msgpack wire format (see `wire_format`), one leaf at a time.

`MsgpackReader` parses one object from a source: `BytesSource` (in-memory
bytes; arrays are read-only views into them, no copy, as in flax) or
`FileSource` (a binary file; each array is allocated once and read straight
into, so reading adds no memory beyond the result, and the bytes read can be
checksummed as they go). Chunked arrays are reassembled into one array.
Malformed or truncated input raises `MalformedDataError` (a `ValueError`).
"""
import struct
from typing import Any, BinaryIO, Optional, Tuple

import msgpack
import numpy as np

from flaxish.serialization import wire_format
from flaxish.serialization.checksum import Checksum
from flaxish.serialization.dtypes import dtype_from_name

__all__ = ['MalformedDataError', 'BytesSource', 'FileSource', 'MsgpackReader',
           'msgpack_restore']

_FIXEXT_SIZES = {0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16}


class MalformedDataError(ValueError):
  """The data is not a valid (or is a truncated) msgpack state dict."""


class BytesSource:
  """Reads from in-memory bytes; arrays are read-only views, not copies."""

  def __init__(self, data: Any):
    self._view = memoryview(data).cast('B')
    self.pos = 0

  @property
  def remaining(self) -> int:
    return len(self._view) - self.pos

  def read(self, n: int) -> memoryview:
    end = self.pos + n
    if end > len(self._view):
      raise MalformedDataError(
          f'the data ends early: {n} bytes wanted at byte {self.pos}, '
          f'{len(self._view) - self.pos} left')
    out = self._view[self.pos:end]
    self.pos = end
    return out

  def array(self, dtype: np.dtype, shape: Tuple[int, ...],
            nbytes: int) -> np.ndarray:
    if nbytes == 0:
      return np.empty(shape, dtype)
    data = self.read(nbytes)
    return np.frombuffer(data, dtype=dtype).reshape(shape)

  def readinto(self, out: memoryview) -> None:
    out[:] = self.read(len(out))


class FileSource:
  """Reads `size` bytes from a binary file, optionally checksumming them.

  Arguments:
    f: a binary file positioned at the start of the data.
    size: how many bytes belong to the data (reads past it fail).
    checksum: a `Checksum` to feed with every byte read, or None.
  """

  def __init__(self, f: BinaryIO, size: int,
               checksum: Optional[Checksum] = None):
    self._f = f
    self._size = size
    self._checksum = checksum
    self.pos = 0

  @property
  def remaining(self) -> int:
    return self._size - self.pos

  def _claim(self, n: int) -> None:
    if self.pos + n > self._size:
      raise MalformedDataError(
          f'the data ends early: {n} bytes wanted at byte {self.pos}, '
          f'{self._size - self.pos} left')
    self.pos += n

  def read(self, n: int) -> bytes:
    self._claim(n)
    data = self._f.read(n)
    if len(data) != n:
      raise MalformedDataError(f'the file ends early, at byte {self.pos}')
    if self._checksum is not None:
      self._checksum.update(data)
    return data

  def array(self, dtype: np.dtype, shape: Tuple[int, ...],
            nbytes: int) -> np.ndarray:
    out = np.empty(nbytes, np.uint8)
    if nbytes:
      self.readinto(memoryview(out))
    return out.view(dtype).reshape(shape)

  def readinto(self, out: memoryview) -> None:
    self._claim(len(out))
    if self._checksum is None:
      self._fill(out)
    else:
      self._checksum.process(out, self._fill, io_first=True)

  def _fill(self, out: memoryview) -> None:
    done = 0
    while done < len(out):
      n = self._f.readinto(out[done:])
      if not n:
        raise MalformedDataError('the file ends early')
      done += n


class MsgpackReader:
  """Parses msgpack objects from a `BytesSource` or `FileSource`."""

  def __init__(self, source: Any):
    self._src = source

  def read_object(self) -> Any:
    """The next object; raises `MalformedDataError` on bad data."""
    try:
      return self._object()
    except MalformedDataError:
      raise
    except (ValueError, TypeError, struct.error, UnicodeDecodeError,
            msgpack.UnpackException, RecursionError) as e:
      raise MalformedDataError(f'malformed data near byte {self._src.pos}: '
                               f'{e}') from e

  def _byte(self) -> int:
    return self._src.read(1)[0]

  def _unpack(self, fmt: str, n: int) -> Any:
    return struct.unpack(fmt, self._src.read(n))[0]

  def _object(self) -> Any:
    b = self._byte()
    if b <= 0x7f:
      return b
    if b >= 0xe0:
      return b - 0x100
    if 0x80 <= b <= 0x8f:
      return self._map(b & 0x0f)
    if 0x90 <= b <= 0x9f:
      return self._array(b & 0x0f)
    if 0xa0 <= b <= 0xbf:
      return str(self._src.read(b & 0x1f), 'utf-8')
    handler = _HANDLERS.get(b)
    if handler is None:
      raise MalformedDataError(f'invalid msgpack type byte 0x{b:02x} at byte '
                               f'{self._src.pos - 1}')
    return handler(self)

  def _str(self, n: int) -> str:
    return str(self._src.read(n), 'utf-8')

  def _bin(self, n: int) -> bytes:
    return bytes(self._src.read(n))

  def _array(self, n: int) -> list:
    self._check_count(n)
    return [self._object() for _ in range(n)]

  def _map(self, n: int) -> Any:
    self._check_count(n)
    out = {}
    for i in range(n):
      key = self._object()
      if i == 0 and key == wire_format.CHUNKED_MARKER:
        return self._chunked(n)
      out[key] = self._object()
    return out

  def _check_count(self, n: int) -> None:
    if n > self._src.remaining:  # each element takes at least one byte
      raise MalformedDataError(f'a container of {n} elements cannot fit in '
                               f'the {self._src.remaining} bytes left')

  def _ext(self, n: int) -> Any:
    code = self._unpack('>b', 1)
    if code in (wire_format.NDARRAY, wire_format.NPSCALAR):
      end = self._src.pos + n
      arr = self._ndarray_payload()
      if self._src.pos != end:
        raise MalformedDataError('an array extension has the wrong length')
      return arr[()] if code == wire_format.NPSCALAR else arr
    data = self._bin(n)
    if code == wire_format.COMPLEX:
      real, imag = msgpack.unpackb(data)
      return complex(real, imag)
    return msgpack.ExtType(code, data)

  def _ndarray_header(self) -> Tuple[Tuple[int, ...], np.dtype, int]:
    """Reads `[shape, dtype, <bin header>` and returns the array's layout."""
    if self._byte() != 0x93:
      raise MalformedDataError('an array extension does not hold '
                               '[shape, dtype, data]')
    shape = self._object()
    name = self._object()
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and d >= 0 for d in shape):
      raise MalformedDataError(f'invalid array shape {shape!r}')
    if not isinstance(name, (str, bytes)):
      raise MalformedDataError(f'invalid array dtype {name!r}')
    dtype = dtype_from_name(name)
    if dtype.hasobject:
      raise MalformedDataError(f'an array has the dtype {dtype}: Python '
                               'objects cannot be read from raw bytes')
    b = self._byte()
    if b == 0xc4:
      nbytes = self._byte()
    elif b == 0xc5:
      nbytes = self._unpack('>H', 2)
    elif b == 0xc6:
      nbytes = self._unpack('>I', 4)
    else:
      raise MalformedDataError('the data of an array is not a msgpack bin')
    shape = tuple(shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes != expected:
      raise MalformedDataError(f'an array of shape {shape} and dtype {dtype} '
                               f'has {nbytes} data bytes, not {expected}')
    if nbytes > self._src.remaining:
      raise MalformedDataError(f'an array of {nbytes} bytes does not fit in '
                               f'the {self._src.remaining} bytes left')
    return shape, dtype, nbytes

  def _ndarray_payload(self) -> np.ndarray:
    shape, dtype, nbytes = self._ndarray_header()
    return self._src.array(dtype, shape, nbytes)

  def _chunked(self, n: int) -> np.ndarray:
    """The rest of a chunked-array map (its marker key was just read)."""
    if n != 3 or self._object() is not True or self._object() != 'shape':
      raise MalformedDataError('malformed chunked array')
    dims = self._object()
    if not isinstance(dims, dict):
      raise MalformedDataError('malformed chunked array shape')
    try:
      shape = tuple(dims[str(i)] for i in range(len(dims)))
    except KeyError as e:
      raise MalformedDataError('malformed chunked array shape') from e
    if self._object() != 'chunks':
      raise MalformedDataError('malformed chunked array')
    b = self._byte()
    if 0x80 <= b <= 0x8f:
      count = b & 0x0f
    elif b == 0xde:
      count = self._unpack('>H', 2)
    elif b == 0xdf:
      count = self._unpack('>I', 4)
    else:
      raise MalformedDataError('malformed chunked array chunks')
    size = int(np.prod(shape, dtype=np.int64))
    out, filled = None, 0
    for i in range(count):
      if self._object() != str(i):
        raise MalformedDataError('chunks of a chunked array out of order')
      b = self._byte()
      if b == 0xc9:
        length = self._unpack('>I', 4)
      elif b == 0xc8:
        length = self._unpack('>H', 2)
      elif b == 0xc7:
        length = self._byte()
      elif b in _FIXEXT_SIZES:
        length = _FIXEXT_SIZES[b]
      else:
        raise MalformedDataError('a chunk of a chunked array is not an array')
      end = self._src.pos + 1 + length
      if self._unpack('>b', 1) != wire_format.NDARRAY:
        raise MalformedDataError('a chunk of a chunked array is not an array')
      chunk_shape, dtype, nbytes = self._ndarray_header()
      if out is None:
        out = np.empty(size * dtype.itemsize, np.uint8)
      if (len(chunk_shape) != 1 or filled + nbytes > out.nbytes or
          out.nbytes != size * dtype.itemsize):
        raise MalformedDataError('the chunks of a chunked array do not add '
                                 'up to its shape')
      self._src.readinto(memoryview(out)[filled:filled + nbytes])
      filled += nbytes
      if self._src.pos != end:
        raise MalformedDataError('an array extension has the wrong length')
      last_dtype = dtype
    if out is None or filled != out.nbytes:
      raise MalformedDataError('the chunks of a chunked array do not add up '
                               'to its shape')
    return out.view(last_dtype).reshape(shape)


def _sized(fmt: str, size: int, then):
  return lambda r: then(r, r._unpack(fmt, size))  # pylint: disable=protected-access


_HANDLERS = {
    0xc0: lambda r: None,
    0xc2: lambda r: False,
    0xc3: lambda r: True,
    0xc4: _sized('>B', 1, MsgpackReader._bin),
    0xc5: _sized('>H', 2, MsgpackReader._bin),
    0xc6: _sized('>I', 4, MsgpackReader._bin),
    0xc7: _sized('>B', 1, MsgpackReader._ext),
    0xc8: _sized('>H', 2, MsgpackReader._ext),
    0xc9: _sized('>I', 4, MsgpackReader._ext),
    0xca: lambda r: r._unpack('>f', 4),
    0xcb: lambda r: r._unpack('>d', 8),
    0xcc: lambda r: r._unpack('>B', 1),
    0xcd: lambda r: r._unpack('>H', 2),
    0xce: lambda r: r._unpack('>I', 4),
    0xcf: lambda r: r._unpack('>Q', 8),
    0xd0: lambda r: r._unpack('>b', 1),
    0xd1: lambda r: r._unpack('>h', 2),
    0xd2: lambda r: r._unpack('>i', 4),
    0xd3: lambda r: r._unpack('>q', 8),
    0xd4: lambda r: r._ext(1),
    0xd5: lambda r: r._ext(2),
    0xd6: lambda r: r._ext(4),
    0xd7: lambda r: r._ext(8),
    0xd8: lambda r: r._ext(16),
    0xd9: _sized('>B', 1, MsgpackReader._str),
    0xda: _sized('>H', 2, MsgpackReader._str),
    0xdb: _sized('>I', 4, MsgpackReader._str),
    0xdc: _sized('>H', 2, MsgpackReader._array),
    0xdd: _sized('>I', 4, MsgpackReader._array),
    0xde: _sized('>H', 2, MsgpackReader._map),
    0xdf: _sized('>I', 4, MsgpackReader._map),
}


def msgpack_restore(encoded_pytree: bytes) -> Any:
  """The tree of dicts, lists, scalars and NumPy arrays in msgpack bytes.

  Low level: to restore Models, Optimizers and other classes use
  `from_bytes`. Arrays are read-only views into `encoded_pytree` (no copy;
  pass a `bytearray` for writable arrays); chunked arrays are reassembled.

  Raises:
    MalformedDataError: the bytes are not valid msgpack, are truncated, or
      have extra bytes at the end.
  """
  source = BytesSource(encoded_pytree)
  tree = MsgpackReader(source).read_object()
  if source.remaining:
    raise MalformedDataError(f'{source.remaining} extra bytes after the '
                             'msgpack data')
  return tree
