"""The msgpack wire format of state dicts (2020 flax), on the msgpack library.

Arrays are ext type 1 `(shape, dtype.str, C-order bytes)` (ml_dtypes by name,
e.g. 'bfloat16'), complex ext type 2 `(real, imag)`, NumPy scalars type 3;
arrays over `MAX_CHUNK_SIZE` bytes are chunked as in current flax. Restored
arrays are read-only.
"""
import io
import os
import struct
import zlib
from typing import Any, BinaryIO, Dict, Optional, Sequence, Tuple

import jax
from jax.experimental import multihost_utils
import ml_dtypes
import msgpack
import numpy as np

from flaxish.serialization.state_dict import (from_state_dict, join_path,
                                              to_state_dict)

__all__ = ['msgpack_serialize', 'msgpack_restore', 'to_bytes', 'from_bytes',
           'write_checkpoint', 'read_checkpoint', 'MalformedDataError',
           'CorruptCheckpointError', 'UnsupportedCheckpointError', 'to_numpy']

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


class _Digest:
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
  """An array leaf on the host (keys as key data; split arrays gathered)."""
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
  raise TypeError('only dicts, lists, tuples, arrays and scalars can be '
                  'written: use to_state_dict, register_serialization_state')


class _Writer:
  """Streams a tree to `write` with a `msgpack.Packer`."""

  def __init__(self, write: Any):
    self.write, self.p = write, msgpack.Packer(
        use_bin_type=True, strict_types=True, default=_default)

  def pack(self, x: Any, path: str = '') -> None:
    # pylint: disable=unidiomatic-typecheck
    if isinstance(x, (np.ndarray, np.generic, jax.Array)):
      return self._array(x, path)
    if type(x) not in (dict, list, tuple):
      return self._scalar(x, path)
    is_dict = type(x) is dict
    self.write(self.p.pack_map_header(len(x)) if is_dict else
               self.p.pack_array_header(len(x)))
    for key, value in x.items() if is_dict else enumerate(x):
      if is_dict:
        self._scalar(key, join_path(path, key))
      self.pack(value, join_path(path, key))

  def _scalar(self, x: Any, path: str) -> None:
    try:
      self.write(self.p.pack(x))
    except (TypeError, ValueError, OverflowError) as e:
      raise TypeError(f'cannot serialize the {type(x).__name__} at '
                      f'{path or "/"}: {e}') from e

  def _array(self, x: Any, path: str) -> None:
    arr = to_numpy(x)
    if arr.dtype.hasobject or arr.dtype.fields:
      raise TypeError(f'cannot serialize the array at {path or "/"}: its '
                      f'dtype {arr.dtype} is not numeric; convert it first')
    arr = np.ascontiguousarray(arr, arr.dtype.newbyteorder('=')).reshape(
        arr.shape)  # (ascontiguousarray makes scalars 1-D)
    if arr.nbytes <= MAX_CHUNK_SIZE:
      return self._ndarray(arr, NPSCALAR if isinstance(x, np.generic) else
                           NDARRAY)
    flat, pack = arr.reshape(-1), self.p.pack
    # Pieces of at most 64 MiB need less memory to restore.
    per = max(1, min(MAX_CHUNK_SIZE, 2**26) // arr.itemsize)
    starts = range(0, flat.size, per)
    shape = {str(i): d for i, d in enumerate(arr.shape)}
    self.write(self.p.pack_map_header(3) + pack(CHUNKED_MARKER) + pack(True) +
               pack('shape') + pack(shape) + pack('chunks') +
               self.p.pack_map_header(len(starts)))
    for i, start in enumerate(starts):
      self.write(pack(str(i)))
      self._ndarray(flat[start:start + per], NDARRAY)

  def _ndarray(self, arr: np.ndarray, code: int) -> None:
    name = arr.dtype.name if arr.dtype.name in _ML_DTYPES else arr.dtype.str
    prefix = (b'\x93' + self.p.pack(list(arr.shape)) + self.p.pack(name) +
              _header(_BIN, arr.nbytes))
    n = len(prefix) + arr.nbytes
    self.write((bytes((_FIXEXT[n],)) if n in _FIXEXT else _header(_EXT, n)) +
               struct.pack('>b', code) + prefix)
    if arr.nbytes:
      self.write(memoryview(arr.reshape(-1).view(np.uint8)))


def _ext_hook(code: int, data: bytes) -> Any:
  if code not in (NDARRAY, COMPLEX, NPSCALAR):
    return msgpack.ExtType(code, data)
  if code == COMPLEX:
    return complex(*msgpack.unpackb(data))
  shape, name, buffer = msgpack.unpackb(data, raw=False)
  name = name.decode('ascii', 'replace') if isinstance(name, bytes) else name
  dtype = _ML_DTYPES[name] if name in _ML_DTYPES else np.dtype(name)
  if dtype.hasobject or min(shape, default=0) < 0:
    raise ValueError(f'invalid array shape {shape} or dtype {dtype}')
  arr = np.frombuffer(buffer, dtype).reshape(shape)  # errors on a bad size
  return arr[()] if code == NPSCALAR else arr


def _object_hook(d: dict) -> Any:
  if d.get(CHUNKED_MARKER) is not True:
    return d
  try:
    shape = tuple(d['shape'][str(i)] for i in range(len(d['shape'])))
    chunks = [d['chunks'][str(i)] for i in range(len(d['chunks']))]
    if len({(c.dtype, c.ndim) for c in chunks}) != 1:
      raise ValueError('chunks of different dtypes or shapes')
    return np.concatenate(chunks).reshape(shape)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise ValueError(f'malformed chunked array: {e}') from e


_HOOKS = dict(ext_hook=_ext_hook, object_hook=_object_hook,
              strict_map_key=False)


def write_checkpoint(f: BinaryIO, state: Any) -> Dict[str, int]:
  """Writes the state dict `state` to the binary file `f` as msgpack; returns
  `{'size': bytes, 'crc32': zlib CRC-32}`."""
  digest = _Digest(f)
  _Writer(digest.write).pack(state)
  return {'size': digest.size, 'crc32': digest.crc}


def read_checkpoint(path: Any, accepted: Optional[Sequence[Tuple[int, int]]]
                    = None) -> Any:
  """The state dict in the msgpack file `path`. With `accepted` (size,
  CRC-32) pairs, the file must match one, else `CorruptCheckpointError`
  (also raised for malformed data)."""
  path = os.fspath(path)
  with open(path, 'rb') as f:
    size, digest = os.fstat(f.fileno()).st_size, _Digest(f)
    limit = min(max(size, 1 << 16), 2**31 - 1)  # no object is larger
    unpacker = msgpack.Unpacker(digest, max_buffer_size=limit,
                                read_size=min(limit, 1 << 20), **_HOOKS)
    try:
      state = unpacker.unpack()
      if unpacker.tell() != size:
        raise ValueError(f'{size - unpacker.tell()} bytes after the data')
    except msgpack.OutOfData:
      raise CorruptCheckpointError(path, 'truncated (the data ends early)')
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(path, f'malformed data: {e!r}') from None
    while digest.read(1 << 20):  # the rest, for the checksum
      pass
  if accepted and (size, digest.crc) not in [tuple(a) for a in accepted]:
    raise CorruptCheckpointError(path, 'damaged or truncated (checksum '
                                 'mismatch)')
  return state


def msgpack_serialize(pytree: Any, in_place: bool = False) -> bytes:
  """The msgpack bytes of a tree of dicts, lists, scalars, arrays."""
  out = io.BytesIO()  # (`in_place` is ignored)
  _Writer(out.write).pack(pytree)
  return out.getvalue()


def msgpack_restore(encoded_pytree: bytes) -> Any:
  """The tree in msgpack bytes (arrays read-only), or `MalformedDataError`."""
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
