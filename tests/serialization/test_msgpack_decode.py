"""Tests for reading the msgpack wire format (msgpack_decode)."""
import msgpack
import numpy as np
import pytest

from flaxish import serialization
from flaxish.serialization import wire_format
from tests.serialization._wire_reference import (ML_DTYPES, NUMPY_DTYPES,
                                                 assert_same_bits,
                                                 random_array,
                                                 reference_pack,
                                                 reference_unpack)


@pytest.mark.parametrize('dtype', NUMPY_DTYPES + ML_DTYPES,
                         ids=lambda d: np.dtype(d).name)
def test_every_dtype_round_trips_bit_exactly(dtype):
  tree = {'array': random_array(dtype, (3, 5)),
          'scalar': random_array(dtype, ())[()],
          'zero_d': random_array(dtype, (), seed=1)}
  data = serialization.msgpack_serialize(tree)
  # Reference bytes read back the same: the reader does not depend on the
  # writer.
  assert data == reference_pack(tree)
  restored = serialization.msgpack_restore(data)
  assert_same_bits(restored['array'], tree['array'])
  assert_same_bits(restored['zero_d'], tree['zero_d'])
  assert isinstance(restored['scalar'], np.generic)
  assert restored['scalar'].dtype == np.dtype(dtype)
  assert reference_unpack(data)['array'][1] == np.dtype(dtype).name


def test_dtype_str_and_bytes_names_are_read():
  arr = np.arange(4, dtype=np.float32)
  for name in ('<f4', b'float32'):
    payload = msgpack.packb(([4], name, arr.tobytes()), use_bin_type=True)
    data = msgpack.packb({'a': msgpack.ExtType(1, payload)})
    np.testing.assert_array_equal(serialization.msgpack_restore(data)['a'],
                                  arr)


def test_containers_and_scalars():
  tree = {'list': [1, [2, 3]], 'tuple': (4, 5), 'nested': {'x': {'y': -1}},
          'c': 1 - 2j, 'f': 0.1, 'n': None, 'big': 2**64 - 1, 'neg': -2**63,
          's': 'ünïcode', 'b': b'\x00\xff', 't': True, 'float32': 1.5}
  data = msgpack.packb(tree, default=lambda c: msgpack.ExtType(
      2, msgpack.packb((c.real, c.imag))), use_single_float=False)
  assert serialization.msgpack_restore(data) == dict(tree, tuple=[4, 5])
  single = msgpack.packb({'x': 1.5, 'y': [0.25] * 20, 'z': {'k': 'v' * 40}},
                         use_single_float=True)
  assert serialization.msgpack_restore(single) == msgpack.unpackb(single)


def test_reads_chunked_arrays_written_by_reference_code():
  arr = np.arange(30, dtype=np.int16).reshape(5, 6)
  flat = arr.reshape(-1)
  chunks = {str(i): flat[i * 8:(i + 1) * 8] for i in range(4)}
  tree = {'w': {wire_format.CHUNKED_MARKER: True, 'shape': {'0': 5, '1': 6},
                'chunks': chunks}}
  restored = serialization.msgpack_restore(reference_pack(tree))
  np.testing.assert_array_equal(restored['w'], arr)
  assert restored['w'].dtype == np.int16


def test_restored_arrays_view_the_input():
  data = serialization.msgpack_serialize({'a': np.arange(4.0)})
  assert not serialization.msgpack_restore(data)['a'].flags.writeable
  restored = serialization.msgpack_restore(bytearray(data))
  restored['a'][0] = 9  # a bytearray gives writable arrays


def test_unknown_extensions_come_back_as_ext_types():
  data = msgpack.packb({'x': msgpack.ExtType(42, b'abc')})
  assert serialization.msgpack_restore(data) == {
      'x': msgpack.ExtType(42, b'abc')}


@pytest.mark.parametrize('cut', [1, 5, 20, 60, -1])
def test_truncated_data_is_rejected(cut):
  data = serialization.msgpack_serialize({'a': np.arange(8.0), 'b': 'text'})
  with pytest.raises(serialization.MalformedDataError):
    serialization.msgpack_restore(data[:cut])


def test_malformed_data_is_rejected():
  with pytest.raises(serialization.MalformedDataError, match='extra bytes'):
    serialization.msgpack_restore(msgpack.packb(1) + b'\x00')
  with pytest.raises(serialization.MalformedDataError, match='0xc1'):
    serialization.msgpack_restore(b'\xc1')
  payload = msgpack.packb(([3], 'float32', b'\x00' * 8), use_bin_type=True)
  with pytest.raises(serialization.MalformedDataError, match='8 data bytes'):
    serialization.msgpack_restore(msgpack.packb(msgpack.ExtType(1, payload)))
  payload = msgpack.packb(([3], 'no_such_dtype', b''), use_bin_type=True)
  with pytest.raises(ValueError, match='unknown array dtype "no_such_dtype"'):
    serialization.msgpack_restore(msgpack.packb(msgpack.ExtType(1, payload)))
  payload = msgpack.packb(([1], 'object', b'\x00' * 8), use_bin_type=True)
  with pytest.raises(serialization.MalformedDataError, match='Python objects'):
    serialization.msgpack_restore(msgpack.packb(msgpack.ExtType(1, payload)))
  # A map claiming 2**32 - 1 entries in a few bytes allocates nothing.
  with pytest.raises(serialization.MalformedDataError, match='cannot fit'):
    serialization.msgpack_restore(b'\xdf\xff\xff\xff\xff\xa1a')
  # Nor does an array header claiming more bytes than there are.
  payload = msgpack.packb(([2**40], 'uint8', b''), use_bin_type=True)
  payload = payload[:-2] + b'\xc6\x00\x00\x01\x00'  # bin32 of 65536
  with pytest.raises(serialization.MalformedDataError):
    serialization.msgpack_restore(msgpack.packb(msgpack.ExtType(1, payload)))
