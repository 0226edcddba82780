"""The checkpoint file: a state dict in the wire format, framed and checksummed.

Layout (integers little-endian):

    header  16 bytes   MAGIC (8 bytes), format version (u32), flags (u32, 0)
    body    N bytes    the state dict in the msgpack wire format (`to_bytes`)
    footer  24 bytes   END_MAGIC (8 bytes), N (u64), CRC-32 of the body (u32),
                       CRC-32 of the header and the footer's first 20 bytes

MAGIC starts with 0xc1, a byte that never starts valid msgpack, so the two
kinds of files cannot be confused: a file without the header is read as a
2020 flax checkpoint (plain msgpack, nothing to verify). A truncated file
lacks its footer; a damaged one fails a CRC. Both raise
`CorruptCheckpointError`, which names the file. The body is written and read
one array at a time (see `MsgpackWriter`, `FileSource`).
"""
import io
import os
import struct
import zlib
from typing import Any, BinaryIO, Union

from flaxish.serialization.checksum import Checksum
from flaxish.serialization.msgpack_decode import (FileSource,
                                                  MalformedDataError,
                                                  MsgpackReader)
from flaxish.serialization.msgpack_encode import MsgpackWriter

__all__ = ['MAGIC', 'FORMAT_VERSION', 'CorruptCheckpointError',
           'UnsupportedCheckpointError', 'write_checkpoint', 'read_checkpoint',
           'read_checkpoint_bytes']

MAGIC = b'\xc1FLXCKPT'
END_MAGIC = b'FLXCKEND'
FORMAT_VERSION = 1
_HEADER = struct.Struct('<8sII')
_FOOTER = struct.Struct('<8sQII')
_READ_BUFFER_BYTES = 1 << 16  # smaller than the 1 MiB pieces: they bypass it


class CorruptCheckpointError(ValueError):
  """A checkpoint file is truncated or damaged; `path` names it."""

  def __init__(self, path: str, reason: str):
    self.path = path
    self.reason = reason
    super().__init__(f'checkpoint file {path} is corrupt: {reason}')


class UnsupportedCheckpointError(ValueError):
  """A checkpoint file was written in a newer format version."""


def _write_all(f: BinaryIO, data: Any) -> None:
  view = memoryview(data).cast('B')
  while view:
    n = f.write(view)
    if n is None:
      raise OSError(f'the write to {getattr(f, "name", f)} would block')
    view = view[n:]


def write_checkpoint(f: BinaryIO, state: Any) -> int:
  """Writes `state` (a state dict) to the binary file `f` in this format.

  Arrays are streamed: the memory added is at most one array's host copy.
  Returns the number of bytes written. Does not flush or sync `f`.
  """
  header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0)
  _write_all(f, header)
  checksum = Checksum()
  size = 0

  def sink(piece: Any) -> None:
    nonlocal size
    size += len(piece)
    checksum.process(memoryview(piece).cast('B'), lambda p: _write_all(f, p),
                     io_first=False)

  MsgpackWriter(sink).pack(state)
  head = struct.pack('<8sQI', END_MAGIC, size, checksum.value())
  _write_all(f, head + struct.pack('<I', zlib.crc32(head,
                                                    zlib.crc32(header))))
  return _HEADER.size + size + _FOOTER.size


def _file_size(f: BinaryIO) -> int:
  f.seek(0, io.SEEK_END)
  size = f.tell()
  f.seek(0)
  return size


def _read(f: BinaryIO, name: str) -> Any:
  size = _file_size(f)
  if size == 0:
    raise CorruptCheckpointError(name, 'the file is empty')
  header = f.read(_HEADER.size)
  if not header.startswith(MAGIC[:1]):  # a 2020 checkpoint: plain msgpack
    f.seek(0)
    source = FileSource(f, size)
    try:
      state = MsgpackReader(source).read_object()
    except MalformedDataError as e:
      raise CorruptCheckpointError(
          name, f'{e} (neither a flaxish checkpoint nor a valid msgpack '
          'checkpoint)') from None
    if source.remaining:
      raise CorruptCheckpointError(
          name, f'{source.remaining} bytes after the msgpack data')
    return state
  if len(header) < _HEADER.size or not header.startswith(MAGIC):
    raise CorruptCheckpointError(name, 'the header is damaged or truncated')
  _, version, _ = _HEADER.unpack(header)
  if size < _HEADER.size + _FOOTER.size:
    raise CorruptCheckpointError(name, f'truncated: only {size} bytes')
  f.seek(size - _FOOTER.size)
  footer = f.read(_FOOTER.size)
  end_magic, body_size, body_crc, meta_crc = _FOOTER.unpack(footer)
  if end_magic != END_MAGIC:
    raise CorruptCheckpointError(
        name, 'no end marker: the file is truncated (an interrupted copy?) '
        'or its end is damaged')
  if zlib.crc32(footer[:20], zlib.crc32(header)) != meta_crc:
    raise CorruptCheckpointError(name, 'the header or footer is damaged '
                                 '(checksum mismatch)')
  if version > FORMAT_VERSION:
    raise UnsupportedCheckpointError(
        f'checkpoint file {name} has format version {version}; this flaxish '
        f'reads versions up to {FORMAT_VERSION}: upgrade flaxish')
  if _HEADER.size + body_size + _FOOTER.size != size:
    raise CorruptCheckpointError(
        name, f'the file has {size} bytes but its footer describes '
        f'{_HEADER.size + body_size + _FOOTER.size}')
  f.seek(_HEADER.size)
  checksum = Checksum()
  source = FileSource(f, body_size, checksum)
  try:
    state = MsgpackReader(source).read_object()
  except MalformedDataError as e:
    raise CorruptCheckpointError(name, f'the data is damaged ({e})') from None
  if source.remaining:
    raise CorruptCheckpointError(
        name, f'the data is damaged ({source.remaining} stray bytes)')
  if checksum.value() != body_crc:
    raise CorruptCheckpointError(name, 'the data is damaged (checksum '
                                 'mismatch)')
  return state


def read_checkpoint(path: Union[str, os.PathLike]) -> Any:
  """The state dict in the checkpoint file at `path`, verified.

  Reads 2020 flax checkpoints (plain msgpack) too. Arrays are allocated once
  and read straight into (writable NumPy arrays).

  Raises:
    CorruptCheckpointError: the file is truncated or damaged.
    UnsupportedCheckpointError: the file has a newer format version.
  """
  path = os.fspath(path)
  with open(path, 'rb', buffering=_READ_BUFFER_BYTES) as f:
    return _read(f, path)


def read_checkpoint_bytes(data: bytes, name: str = '<bytes>') -> Any:
  """Like `read_checkpoint`, for the contents of a checkpoint file."""
  return _read(io.BytesIO(data), name)
