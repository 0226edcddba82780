"""Tests for flaxish.serialization.msgpack against msgpack with 2020 hooks."""
import warnings
import zlib

import jax
import jax.numpy as jnp
import ml_dtypes
import msgpack
import numpy as np
import pytest

from flaxish import serialization
from flaxish.serialization import msgpack as wire

NUMPY_DTYPES = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
                np.uint16, np.uint32, np.uint64, np.float16, np.float32,
                np.float64, np.complex64, np.complex128]
ML_DTYPES = [getattr(ml_dtypes, name) for name in (
    'bfloat16', 'float8_e4m3fn', 'float8_e4m3fnuz', 'float8_e4m3b11fnuz',
    'float8_e5m2', 'float8_e5m2fnuz', 'float8_e3m4', 'float8_e4m3',
    'float8_e8m0fnu', 'float6_e2m3fn', 'float6_e3m2fn', 'float4_e2m1fn',
    'int2', 'int4', 'uint2', 'uint4') if hasattr(ml_dtypes, name)]


def pack_2020(tree, dtype_name=lambda d: d.str):
  """The 2020 flax writer: msgpack.packb with its extension hook."""
  def default(x):
    if isinstance(x, (np.ndarray, np.generic)):
      arr = np.asarray(x)
      code = 1 if isinstance(x, np.ndarray) else 3
      return msgpack.ExtType(code, msgpack.packb(
          (arr.shape, dtype_name(arr.dtype), arr.tobytes('C')),
          use_bin_type=True))
    if isinstance(x, complex):
      return msgpack.ExtType(2, msgpack.packb((x.real, x.imag)))
    raise TypeError(type(x))
  return msgpack.packb(tree, default=default, strict_types=True)


def unpack_2020(data):
  """The 2020 flax reader: msgpack.unpackb with its extension hook."""
  def ext_hook(code, payload):
    if code == 1:
      shape, dtype, buffer = msgpack.unpackb(payload, raw=True)
      return np.frombuffer(buffer, dtype=dtype).reshape(shape)
    if code == 2:
      return complex(*msgpack.unpackb(payload))
    return msgpack.ExtType(code, payload)
  return msgpack.unpackb(data, ext_hook=ext_hook, raw=False)


def random_array(dtype, shape, seed=0):
  dtype = np.dtype(dtype)
  raw = np.random.default_rng(seed).integers(
      0, 256, int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
  return (raw & 1 if dtype == np.bool_ else raw).view(dtype).reshape(shape)


def assert_same_bits(a, b):
  assert a.dtype == b.dtype and a.shape == b.shape
  assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


TREE = {'params': {'kernel': random_array(np.float32, (3, 4)),
                   'bias': random_array(np.float64, (4,), 1)},
        'list': [1, -2, 2.5, 'text', b'raw', None, True, 3 - 4j],
        'empty': np.zeros((0, 2), np.int16), 'big': np.arange(70000.0),
        'fortran': np.asfortranarray(random_array(np.int32, (5, 3), 2))}


def test_writes_exactly_the_2020_bytes_both_ways():
  data = serialization.msgpack_serialize(TREE)
  assert data == pack_2020(TREE)
  read = unpack_2020(data)  # the 2020 reader reads what flaxish writes
  restored = serialization.msgpack_restore(pack_2020(TREE))
  for tree in (read, restored):
    for key in ('kernel', 'bias'):
      assert_same_bits(tree['params'][key], TREE['params'][key])
    assert tree['list'] == TREE['list']
    assert_same_bits(tree['fortran'], TREE['fortran'])
    assert_same_bits(tree['empty'], TREE['empty'])


@pytest.mark.parametrize('dtype', NUMPY_DTYPES + ML_DTYPES)
def test_every_dtype_round_trips_bit_exactly(dtype):
  arr = random_array(dtype, (3, 5))
  try:  # without x64, 64-bit types become 32-bit
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', RuntimeWarning)  # overflow in the cast
      as_jax = jnp.asarray(arr)
  except jax.errors.JaxRuntimeError:  # a type this XLA does not support
    as_jax = arr
  tree = {'a': arr, 'scalar': arr[0, 0], 'jax': as_jax}
  data = serialization.msgpack_serialize(tree)
  restored = serialization.msgpack_restore(data)
  assert_same_bits(restored['a'], arr)
  assert_same_bits(restored['jax'], np.asarray(as_jax))
  assert isinstance(restored['scalar'], np.generic)
  assert_same_bits(np.asarray(restored['scalar']), np.asarray(arr[0, 0]))
  # On the wire: 2020's dtype.str, or the name where dtype.str is ambiguous.
  shape, name, _ = msgpack.unpackb(
      msgpack.unpackb(data, ext_hook=lambda c, p: p)['a'])
  dtype = np.dtype(dtype)
  assert (shape, name) == ([3, 5], dtype.name if dtype in map(
      np.dtype, ML_DTYPES) else dtype.str)
  assert data == pack_2020(tree | {'jax': np.asarray(as_jax)},
                           lambda d: d.name if d in map(np.dtype, ML_DTYPES)
                           else d.str)


def test_current_flax_dtype_names_and_unknown_extensions_are_read():
  data = pack_2020({'a': np.arange(3, dtype=np.int8)}, lambda d: d.name)
  assert_same_bits(serialization.msgpack_restore(data)['a'],
                   np.arange(3, dtype=np.int8))
  other = msgpack.packb({'x': msgpack.ExtType(42, b'abc')})
  assert serialization.msgpack_restore(other) == {
      'x': msgpack.ExtType(42, b'abc')}


def test_jax_arrays_and_typed_keys_are_written_as_numpy():
  tree = {'x': jnp.arange(4.0), 'k': jax.random.key(1)}
  restored = serialization.msgpack_restore(serialization.msgpack_serialize(
      tree))
  np.testing.assert_array_equal(restored['x'], np.arange(4.0))
  np.testing.assert_array_equal(restored['k'],
                                jax.random.key_data(jax.random.key(1)))


def test_large_arrays_are_chunked_like_current_flax(monkeypatch):
  monkeypatch.setattr(wire, 'MAX_CHUNK_SIZE', 40)
  arr = random_array(np.float32, (5, 5))  # 100 bytes: chunks of 10 values
  data = serialization.msgpack_serialize({'w': arr, 'small': np.ones(2)})
  raw = unpack_2020(data)['w']
  assert raw[wire.CHUNKED_MARKER] is True
  assert raw['shape'] == {'0': 5, '1': 5}
  assert [raw['chunks'][str(i)].size for i in range(3)] == [10, 10, 5]
  np.testing.assert_array_equal(
      np.concatenate([raw['chunks'][str(i)] for i in range(3)]),
      arr.reshape(-1))
  assert_same_bits(serialization.msgpack_restore(data)['w'], arr)


def test_malformed_chunked_arrays_are_errors():
  def chunked(**fields):
    return pack_2020({'w': {wire.CHUNKED_MARKER: True, **fields}})
  cases = {
      "malformed chunked array: 'chunks'": chunked(shape={'0': 2}),
      'malformed chunked array: chunks of different dtypes or shapes': chunked(
          shape={'0': 2}, chunks={'0': np.zeros(1, np.float32),
                                  '1': np.zeros(1, np.float64)}),
      'malformed chunked array: cannot reshape': chunked(
          shape={'0': 3}, chunks={'0': np.zeros(2, np.float32)})}
  for message, data in cases.items():
    with pytest.raises(serialization.MalformedDataError, match=message):
      serialization.msgpack_restore(data)


def test_array_bytes_are_streamed_from_the_array_itself():
  arr = random_array(np.float32, (256, 256))
  pieces = []

  class Recorder:
    def write(self, data):
      pieces.append(data)
      return memoryview(data).nbytes

  digest = serialization.write_checkpoint(Recorder(), {'w': arr})
  shared = [p for p in pieces if isinstance(p, memoryview) and np.shares_memory(
      np.frombuffer(p, np.uint8), arr)]
  assert len(shared) == 1 and shared[0].nbytes == arr.nbytes
  data = b''.join(bytes(p) for p in pieces)
  assert data == pack_2020({'w': arr})
  assert digest == {'size': len(data), 'crc32': zlib.crc32(data)}


@pytest.mark.parametrize('cut', [1, 2, 10, 40, 300, -1])
def test_truncated_and_trailing_data_are_errors(cut):
  data = serialization.msgpack_serialize(TREE)
  with pytest.raises(serialization.MalformedDataError,
                     match='malformed msgpack data'):
    serialization.msgpack_restore(data[:cut])
  with pytest.raises(serialization.MalformedDataError, match='extra data'):
    serialization.msgpack_restore(data + b'\x00')


def test_bad_array_payloads_are_errors():
  def ext(payload):
    return msgpack.packb({'a': msgpack.ExtType(1, msgpack.packb(
        payload, use_bin_type=True))}, use_bin_type=True)
  cases = {'buffer size must be a multiple': ([3], '<f4', b'\0' * 11),
           'cannot reshape array of size 2 into shape': ([3], '<f4', b'\0' * 8),
           r'invalid array shape \[-1\]': ([-1], '<f4', b''),
           'data type .nope. not understood': ([1], 'nope', b'\0'),
           'not enough values to unpack': ([1], '<f4'),
           'dtype object': ([1], '|O', b'\0' * 8)}
  for message, payload in cases.items():
    with pytest.raises(serialization.MalformedDataError, match=message):
      serialization.msgpack_restore(ext(payload))


def test_containers_claiming_more_than_the_file_holds(tmp_path):
  path = tmp_path / 'evil'
  path.write_bytes(b'\xdd\xff\xff\xff\xff\x00')  # an array of 2**32 - 1
  with pytest.raises(serialization.CorruptCheckpointError,
                     match=r'evil is corrupt: malformed data: .*exceeds'):
    serialization.read_checkpoint(path)


def test_refused_inputs_name_the_path():
  cases = [({'a': [1, object()]}, 'cannot serialize the object at /a/1'),
           ({'a': np.array([None])}, 'array at /a: its dtype object is not'),
           ({'s': np.zeros(2, [('x', 'i4')])}, r'array at /s: its dtype \['),
           ({'a': {(1, 2): 3}}, r'cannot serialize the tuple at /a/\(1, 2\)'),
           ({'big': 2**70}, 'cannot serialize the int at /big'),
           ({'d': collections_ordered()}, 'cannot serialize the OrderedDict')]
  for tree, message in cases:
    with pytest.raises(TypeError, match=message):
      serialization.msgpack_serialize(tree)


def collections_ordered():
  import collections  # pylint: disable=g-import-not-at-top
  return collections.OrderedDict(a=1)


def test_checkpoint_files_verify_against_a_digest(tmp_path):
  path = tmp_path / 'f'
  with open(path, 'wb') as f:
    digest = serialization.write_checkpoint(f, TREE)
  size, crc = digest['size'], digest['crc32']
  restored = serialization.read_checkpoint(path, [(1, 2), (size, crc)])
  assert_same_bits(restored['params']['kernel'], TREE['params']['kernel'])
  for wrong in ((size, crc ^ 1), (size + 1, crc)):
    with pytest.raises(serialization.CorruptCheckpointError,
                       match=r'f is corrupt: damaged or truncated \(checksum '
                       r'mismatch\)'):
      serialization.read_checkpoint(path, [wrong])
  with open(path, 'ab') as f:
    f.write(b'\xc0')
  with pytest.raises(serialization.CorruptCheckpointError,
                     match=r"malformed data: ValueError\('1 bytes after"):
    serialization.read_checkpoint(path)
  path.write_bytes(path.read_bytes()[:-100])
  with pytest.raises(serialization.CorruptCheckpointError,
                     match=r'f is corrupt: truncated \(the data ends early\)'):
    serialization.read_checkpoint(path)


def test_to_bytes_and_from_bytes():
  target = {'w': np.zeros(3, np.float32), 'n': [0, 0]}
  data = serialization.to_bytes({'w': np.arange(3.0), 'n': [4, 5]})
  restored = serialization.from_bytes(target, data)
  assert restored['n'] == [4, 5] and restored['w'].dtype == np.float32
  with pytest.raises(serialization.RestoreError, match='/n/x: missing'):
    serialization.from_bytes({'w': target['w'], 'n': {'x': 0}}, data)
  _, skipped = serialization.from_bytes({'w': target['w']}, data, strict=False)
  assert [p.path for p in skipped] == ['/n']
  assert serialization.msgpack_serialize(target, in_place=True) == (
      serialization.msgpack_serialize(target))
