"""Tests for the checkpoint file format (serialization.checkpoint_file)."""
import io
import struct
import tracemalloc
import zlib

import msgpack
import numpy as np
import pytest

from flaxish import serialization
from flaxish.serialization import checkpoint_file
from flaxish.serialization.checkpoint_file import (CorruptCheckpointError,
                                                   read_checkpoint,
                                                   write_checkpoint)
from tests.serialization._wire_reference import reference_pack


def _state():
  rng = np.random.default_rng(0)
  return {'params': {'w': rng.standard_normal((8, 16)).astype(np.float32),
                     'b': np.arange(16, dtype=np.int64)},
          'step': 12, 'name': 'run'}


def _write(path, state):
  with open(path, 'wb') as f:
    return write_checkpoint(f, state)


def test_layout(tmp_path):
  path = tmp_path / 'ckpt'
  size = _write(path, _state())
  data = path.read_bytes()
  assert len(data) == size
  magic, version, flags = struct.unpack('<8sII', data[:16])
  assert (magic, version, flags) == (b'\xc1FLXCKPT', 1, 0)
  end, body_size, body_crc, meta_crc = struct.unpack('<8sQII', data[-24:])
  body = data[16:-24]
  assert end == b'FLXCKEND' and body_size == len(body)
  assert body == reference_pack(_state())  # the 2020 wire format
  assert body_crc == zlib.crc32(body)
  assert meta_crc == zlib.crc32(data[:16] + data[-24:-4])


def test_round_trip_gives_writable_arrays(tmp_path):
  path = tmp_path / 'ckpt'
  _write(path, _state())
  restored = read_checkpoint(path)
  np.testing.assert_array_equal(restored['params']['w'],
                                _state()['params']['w'])
  assert restored['step'] == 12 and restored['name'] == 'run'
  restored['params']['b'][0] = 5  # allocated and read into, not a view
  assert checkpoint_file.read_checkpoint_bytes(path.read_bytes())['step'] == 12


def test_reads_2020_msgpack_checkpoints(tmp_path):
  path = tmp_path / 'old'
  path.write_bytes(reference_pack(_state()))
  np.testing.assert_array_equal(read_checkpoint(path)['params']['b'],
                                np.arange(16))


def test_large_arrays_stream_through_the_checksum(tmp_path):
  big = np.random.default_rng(1).integers(0, 255, 20 << 20, dtype=np.uint8)
  path = tmp_path / 'big'
  _write(path, {'big': big, 'small': np.ones(3)})
  np.testing.assert_array_equal(read_checkpoint(path)['big'], big)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0x10
  path.write_bytes(data)
  with pytest.raises(CorruptCheckpointError, match='checksum mismatch'):
    read_checkpoint(path)


@pytest.mark.parametrize('keep', [0, 1, 10, 16, 100, -30, -24, -1])
def test_truncated_files_are_rejected_naming_the_file(tmp_path, keep):
  path = tmp_path / 'ckpt'
  _write(path, _state())
  data = path.read_bytes()
  path.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
  with pytest.raises(CorruptCheckpointError) as info:
    read_checkpoint(path)
  assert str(path) in str(info.value) and info.value.path == str(path)


def test_every_bit_flip_is_rejected(tmp_path):
  path = tmp_path / 'ckpt'
  _write(path, {'w': np.arange(6, dtype=np.float32), 's': 'x'})
  data = path.read_bytes()
  rng = np.random.default_rng(0)
  for position in range(len(data)):
    damaged = bytearray(data)
    damaged[position] ^= 1 << int(rng.integers(8))
    path.write_bytes(damaged)
    with pytest.raises(CorruptCheckpointError, match=str(path)):
      read_checkpoint(path)


def test_trailing_bytes_and_wrong_lengths_are_rejected(tmp_path):
  path = tmp_path / 'ckpt'
  _write(path, _state())
  data = path.read_bytes()
  path.write_bytes(data + b'\x00')
  with pytest.raises(CorruptCheckpointError, match='no end marker'):
    read_checkpoint(path)
  path.write_bytes(b'')
  with pytest.raises(CorruptCheckpointError, match='empty'):
    read_checkpoint(path)
  path.write_bytes(msgpack.packb({'a': 1}) + b'junk')
  with pytest.raises(CorruptCheckpointError, match='bytes after'):
    read_checkpoint(path)


def test_newer_versions_are_refused(tmp_path):
  path = tmp_path / 'ckpt'
  _write(path, _state())
  data = bytearray(path.read_bytes())
  data[8:12] = struct.pack('<I', 2)
  data[-4:] = struct.pack('<I', zlib.crc32(bytes(data[:16] + data[-24:-4])))
  path.write_bytes(data)
  with pytest.raises(serialization.UnsupportedCheckpointError,
                     match='format version 2.*upgrade flaxish'):
    read_checkpoint(path)


def test_memory_added_is_bounded_by_the_largest_array(tmp_path):
  # Transposed arrays need a C-order copy each: the writer makes one at a
  # time. The reader allocates each array once and reads straight into it.
  rng = np.random.default_rng(0)
  state = {f'w{i}': rng.standard_normal((512, 512)).T for i in range(6)}
  largest = 512 * 512 * 8
  path = tmp_path / 'ckpt'
  tracemalloc.start()
  try:
    tracemalloc.reset_peak()
    _write(path, state)
    _, peak = tracemalloc.get_traced_memory()
    assert peak <= 1.2 * largest
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    restored = read_checkpoint(path)
    current, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  result = sum(a.nbytes for a in restored.values())
  assert current - base >= result  # the arrays were allocated once
  assert peak - base <= result + 0.2 * largest
  for key, value in state.items():
    np.testing.assert_array_equal(restored[key], value)


def test_write_to_any_binary_file():
  buf = io.BytesIO()
  write_checkpoint(buf, {'a': np.ones(2)})
  assert checkpoint_file.read_checkpoint_bytes(buf.getvalue())['a'].sum() == 2
