"""The msgpack wire format of state dicts (2020 flax), on the msgpack library.

Maps, arrays and msgpack's own scalars (exact types); an array (NumPy,
`jax.Array`) is ext type 1, the msgpack of `(shape, dtype.str, C-order
bytes)` as in 2020 (`ml_dtypes` types such as bfloat16, whose `dtype.str` is
ambiguous, by name; readers take both); a complex is ext type 2, the msgpack
of `(real, imag)`; a NumPy scalar ext type 3, laid out as 1. An array over
`MAX_CHUNK_SIZE` bytes is `{CHUNKED_MARKER: True, 'shape': {'0': d0, ..},
'chunks': {'0': a0, ..}}` of flat pieces, as current flax writes it. Writing
streams each array's bytes from its memory to the file; reading is
`msgpack.Unpacker(file, ext_hook=...)` with limits from the file size.
Restored arrays are read-only views, as in 2020.
"""
import io
import os
import struct
import zlib
from typing import Any, BinaryIO, Dict, Optional, Sequence

import jax
from jax.experimental import multihost_utils
import ml_dtypes
import msgpack
import numpy as np

from flaxish.serialization.state_dict import (from_state_dict, join_path,
                                              to_state_dict)

__all__ = ['CHUNKED_MARKER', 'MAX_CHUNK_SIZE', 'MalformedDataError',
           'CorruptCheckpointError', 'UnsupportedCheckpointError',
           'msgpack_serialize', 'msgpack_restore',
           'to_bytes', 'from_bytes', 'write_checkpoint', 'read_checkpoint',
           'read_msgpack', 'Digest', 'to_numpy']

NDARRAY, COMPLEX, NPSCALAR = 1, 2, 3
CHUNKED_MARKER = '__msgpack_chunked_array__'
MAX_CHUNK_SIZE = 2**30  # read at call time: tests lower it
_ML_DTYPES = {np.dtype(t).name: np.dtype(t) for t in vars(ml_dtypes).values()
              if isinstance(t, type) and issubclass(t, np.generic)}
_BIN = (('B', 0xc4), ('H', 0xc5), ('I', 0xc6))
_EXT = (('B', 0xc7), ('H', 0xc8), ('I', 0xc9))
_FIXEXT = {1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}


class MalformedDataError(ValueError):
  """The data is not a valid (or is a truncated) msgpack state dict."""


class CorruptCheckpointError(ValueError):
  """A checkpoint file is truncated, damaged or incomplete; `path` names it."""

  def __init__(self, path: str, reason: str):
    self.path, self.reason = path, reason
    super().__init__(f'checkpoint file {path} is corrupt: {reason}')


class UnsupportedCheckpointError(ValueError):
  """A checkpoint was written in a newer format version."""


class Digest:
  """Wraps a binary file: counts and CRC-32s the bytes read or written."""

  def __init__(self, f: BinaryIO):
    self.f, self.size, self.crc = f, 0, 0

  def write(self, data: Any) -> None:
    view = memoryview(data).cast('B')
    self.crc, self.size = zlib.crc32(view, self.crc), self.size + len(view)
    while view:  # a raw file may write only part
      view = view[self.f.write(view):]

  def read(self, n: int = -1) -> bytes:
    data = self.f.read(n)
    self.crc, self.size = zlib.crc32(data, self.crc), self.size + len(data)
    return data


def to_numpy(x: Any) -> np.ndarray:
  """An array leaf on the host; typed PRNG keys become their key data, a
  `jax.Array` split over processes is gathered (a collective)."""
  if isinstance(x, jax.Array):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if not x.is_fully_addressable:
      x = x.addressable_data(0) if x.is_fully_replicated else (
          multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _header(tags, n: int) -> bytes:
  """A msgpack bin or ext header (the Packer has no API for these alone)."""
  fmt, tag = next(t for t in tags if n < 1 << 8 * struct.calcsize(t[0]))
  return struct.pack('>B' + fmt, tag, n)


def _default(x: Any) -> Any:
  if isinstance(x, complex):
    return msgpack.ExtType(COMPLEX, msgpack.packb((x.real, x.imag)))
  raise TypeError(f'a {type(x).__name__} cannot be written: only dicts, '
                  'lists, tuples, arrays and Python scalars can. Convert it '
                  'with to_state_dict (or use to_bytes); register custom '
                  'classes with register_serialization_state')


class _Writer:
  """Streams a tree to `write` with a `msgpack.Packer`."""

  def __init__(self, write: Any):
    self.write = write
    self.p = msgpack.Packer(use_bin_type=True, strict_types=True,
                            default=_default)

  def pack(self, x: Any, path: str = '') -> None:
    if type(x) in (dict, list, tuple):  # pylint: disable=unidiomatic-typecheck
      items = x.items() if type(x) is dict else enumerate(x)  # pylint: disable=unidiomatic-typecheck
      self.write(self.p.pack_map_header(len(x)) if type(x) is dict else  # pylint: disable=unidiomatic-typecheck
                 self.p.pack_array_header(len(x)))
      for key, value in items:
        if type(x) is dict:  # pylint: disable=unidiomatic-typecheck
          self._scalar(key, join_path(path, key))
        self.pack(value, join_path(path, key))
    elif isinstance(x, (np.ndarray, np.generic, jax.Array)):
      arr = to_numpy(x)
      if arr.dtype.hasobject or arr.dtype.fields:
        raise TypeError(f'cannot serialize the array at {path or "/"}: its '
                        f'dtype {arr.dtype} is not numeric; convert it first')
      arr = np.ascontiguousarray(arr, arr.dtype.newbyteorder('=')).reshape(
          arr.shape)
      if arr.nbytes <= MAX_CHUNK_SIZE:
        return self._ndarray(arr, NPSCALAR if isinstance(x, np.generic) else
                             NDARRAY)
      flat, per = arr.reshape(-1), max(1, MAX_CHUNK_SIZE // arr.itemsize)
      starts = range(0, flat.size, per)
      self.write(self.p.pack_map_header(3) + self.p.pack(CHUNKED_MARKER) +
                 self.p.pack(True) + self.p.pack('shape') + self.p.pack(
                     {str(i): int(d) for i, d in enumerate(arr.shape)}) +
                 self.p.pack('chunks') + self.p.pack_map_header(len(starts)))
      for i, start in enumerate(starts):
        self.write(self.p.pack(str(i)))
        self._ndarray(flat[start:start + per], NDARRAY)
    else:
      self._scalar(x, path)

  def _scalar(self, x: Any, path: str) -> None:
    try:
      self.write(self.p.pack(x))
    except (TypeError, ValueError, OverflowError) as e:
      raise TypeError(f'cannot serialize the {type(x).__name__} at '
                      f'{path or "/"}: {e}') from e

  def _ndarray(self, arr: np.ndarray, code: int) -> None:
    name = arr.dtype.name if arr.dtype.name in _ML_DTYPES else arr.dtype.str
    prefix = (b'\x93' + self.p.pack([int(d) for d in arr.shape]) +
              self.p.pack(name) + _header(_BIN, arr.nbytes))
    n = len(prefix) + arr.nbytes
    self.write((bytes((_FIXEXT[n],)) if n in _FIXEXT else _header(_EXT, n)) +
               struct.pack('>b', code) + prefix)
    if arr.nbytes:
      self.write(memoryview(arr.reshape(-1).view(np.uint8)))


def _ext_hook(code: int, data: bytes) -> Any:
  if code == COMPLEX:
    return complex(*msgpack.unpackb(data))
  if code not in (NDARRAY, NPSCALAR):
    return msgpack.ExtType(code, data)
  unpacker = msgpack.Unpacker(io.BytesIO(data), raw=False)
  if unpacker.read_array_header() != 3:
    raise ValueError('an array extension does not hold (shape, dtype, data)')
  shape, name = unpacker.unpack(), unpacker.unpack()
  name = name.decode('ascii', 'replace') if isinstance(name, bytes) else name
  dtype = _ML_DTYPES[name] if name in _ML_DTYPES else np.dtype(name)
  if dtype.hasobject or not isinstance(shape, list) or not all(
      type(d) is int and d >= 0 for d in shape):  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f'invalid array shape {shape!r} or dtype {dtype}')
  nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  start = len(data) - nbytes
  if start < unpacker.tell() or data[unpacker.tell():start] != _header(
      _BIN, nbytes):
    raise ValueError(f'an array of shape {tuple(shape)} and dtype {dtype} '
                     f'does not hold {nbytes} data bytes')
  arr = np.frombuffer(data, dtype, nbytes // max(dtype.itemsize, 1), start)
  return arr.reshape(shape)[()] if code == NPSCALAR else arr.reshape(shape)


def _object_hook(d: dict) -> Any:
  if d.get(CHUNKED_MARKER) is not True:
    return d
  try:
    shape = tuple(d['shape'][str(i)] for i in range(len(d['shape'])))
    chunks = [d['chunks'][str(i)] for i in range(len(d['chunks']))]
    if len(d) != 3 or len({(c.dtype, c.ndim) for c in chunks}) != 1:
      raise ValueError('chunks of different dtypes or shapes')
    return np.concatenate(chunks).reshape(shape)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise ValueError(f'malformed chunked array: {e}') from e


_HOOKS = dict(ext_hook=_ext_hook, object_hook=_object_hook, raw=False,
              strict_map_key=False)


def read_msgpack(f: Any, size: int) -> Any:
  """The one msgpack object in the `size` bytes of the binary file `f` (read
  to its end). Raises `MalformedDataError`."""
  limit = min(max(size, 1 << 16), 2**31 - 1)
  unpacker = msgpack.Unpacker(f, max_buffer_size=limit,
                              read_size=min(limit, 1 << 20), **_HOOKS)
  try:
    tree = unpacker.unpack()
  except msgpack.OutOfData:
    raise MalformedDataError('the data ends early (truncated)') from None
  except Exception as e:  # pylint: disable=broad-except
    raise MalformedDataError(f'malformed data: {e}') from e
  while f.read(1 << 20):  # the rest, for a Digest
    pass
  if size != unpacker.tell():
    raise MalformedDataError(f'{size - unpacker.tell()} bytes after the data')
  return tree


def write_checkpoint(f: BinaryIO, state: Any) -> Dict[str, int]:
  """Writes `state` (a state dict) to the binary file `f` as plain msgpack,
  array by array; returns `{'size': bytes, 'crc32': zlib CRC-32}`."""
  digest = Digest(f)
  _Writer(digest.write).pack(state)
  return {'size': digest.size, 'crc32': digest.crc}


def read_checkpoint(path: Any,
                    accepted: Optional[Sequence[Dict[str, int]]] = None) -> Any:
  """The state dict in the msgpack file `path`, read array by array.

  With `accepted` (`write_checkpoint` results) the file must match one of
  them, else `CorruptCheckpointError` (which also reports malformed data).
  """
  path = os.fspath(path)
  with open(path, 'rb') as f:
    size, digest = os.fstat(f.fileno()).st_size, Digest(f)
    if accepted is not None and size not in [d['size'] for d in accepted]:
      raise CorruptCheckpointError(path, f'it has {size} bytes, not '
                                   f'{accepted[0]["size"]} (truncated)')
    try:
      state = read_msgpack(digest, size)
    except MalformedDataError as e:
      raise CorruptCheckpointError(path, str(e)) from None
  if accepted is not None and (size, digest.crc) not in [
      (d['size'], d['crc32']) for d in accepted]:
    raise CorruptCheckpointError(path, 'the data is damaged (checksum '
                                 'mismatch)')
  return state


def msgpack_serialize(pytree: Any, in_place: bool = False) -> bytes:
  """The msgpack bytes of a tree of dicts, lists, scalars and arrays (use
  `to_bytes` for Models, Optimizers, ...). `in_place` is ignored."""
  del in_place
  out = io.BytesIO()
  _Writer(out.write).pack(pytree)
  return out.getvalue()


def msgpack_restore(encoded_pytree: bytes) -> Any:
  """The tree in msgpack bytes (arrays read-only); `MalformedDataError` for
  invalid, truncated or trailing data."""
  try:
    return msgpack.unpackb(encoded_pytree, **_HOOKS)
  except Exception as e:  # pylint: disable=broad-except
    raise MalformedDataError(f'malformed msgpack data: {e}') from e


def to_bytes(target: Any) -> bytes:
  """The msgpack bytes of `target`'s state dict (a Model, Optimizer, ...)."""
  return msgpack_serialize(to_state_dict(target))


def from_bytes(target: Any, encoded_bytes: bytes, *,
               strict: bool = True) -> Any:
  """Restores `target` from `to_bytes` output (see `from_state_dict`)."""
  return from_state_dict(target, msgpack_restore(encoded_bytes), strict=strict)
