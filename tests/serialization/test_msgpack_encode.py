"""Tests for writing the msgpack wire format (msgpack_encode)."""
import collections

import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import serialization
from flaxish.serialization import wire_format
from flaxish.serialization.msgpack_encode import MsgpackWriter
from tests.serialization._wire_reference import (reference_pack,
                                                 reference_unpack)


def test_bytes_match_the_2020_format():
  tree = {'a': np.arange(6, dtype=np.float32).reshape(2, 3),
          'b': {'c': np.zeros((0, 2), np.int8), 'd': np.float64(2.5)},
          'e': [1, -2, 2**40, 1.5, 'text', b'raw', None, True, 3 + 4j],
          'f': np.array(7, np.uint16), 'g': np.arange(5, dtype=np.int64)}
  assert serialization.msgpack_serialize(tree) == reference_pack(tree)
  # Every small payload length, so fixext / ext8 headers all occur.
  for n in range(40):
    arr = np.arange(n, dtype=np.int8)
    assert serialization.msgpack_serialize({'x': arr}) == reference_pack(
        {'x': arr})
  big = np.arange(70000, dtype=np.uint8)  # ext32, bin32
  assert serialization.msgpack_serialize(big) == reference_pack(big)


def test_jax_arrays_serialize_like_numpy():
  tree = {'f': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(3, jnp.bfloat16),
          'i': jnp.int32(4)}
  numpy_tree = {k: np.asarray(v) for k, v in tree.items()}
  assert serialization.msgpack_serialize(tree) == reference_pack(numpy_tree)


def test_layout_conversions():
  tree = {'be': np.arange(6, dtype='>i4').reshape(2, 3),
          't': np.arange(12.0).reshape(3, 4).T,
          's': np.arange(20, dtype=np.int16)[::3]}
  raw = reference_unpack(serialization.msgpack_serialize(tree))
  assert raw['be'][1] == 'int32'
  for key, value in tree.items():
    shape, name, data = raw[key]
    assert tuple(shape) == value.shape
    expected = np.ascontiguousarray(value.astype(value.dtype.newbyteorder(
        '<')))
    assert data == expected.tobytes() and name == value.dtype.name


def test_arrays_are_handed_over_without_copies():
  arr = np.arange(1 << 16, dtype=np.float64)
  pieces = []
  MsgpackWriter(pieces.append).pack({'a': arr, 'b': 1})
  views = [p for p in pieces if isinstance(p, memoryview)]
  assert len(views) == 1 and views[0].nbytes == arr.nbytes
  assert np.shares_memory(np.asarray(views[0]), arr)


def test_refused_inputs_name_the_path():
  with pytest.raises(TypeError, match=r'/a/0.*objects.*numeric dtype'):
    serialization.msgpack_serialize({'a': [np.array([None, 1])]})
  structured = np.zeros(2, dtype=[('x', np.int32), ('y', np.float32)])
  with pytest.raises(TypeError, match=r'/s.*structured dtype'):
    serialization.msgpack_serialize({'s': structured})
  with pytest.raises(TypeError, match=r'OrderedDict at /o.*to_state_dict'):
    serialization.msgpack_serialize({'o': collections.OrderedDict()})
  with pytest.raises(TypeError, match=r'dict at /k.*key'):
    serialization.msgpack_serialize({'k': {(1, 2): 3}})
  with pytest.raises(ValueError, match=r'int at /i.*64 bits'):
    serialization.msgpack_serialize({'i': 2**64})


def test_chunking_with_a_lowered_threshold(monkeypatch):
  monkeypatch.setattr(wire_format, 'MAX_CHUNK_SIZE', 64)
  tree = {'big': np.arange(100, dtype=np.float32).reshape(4, 25),
          'odd': np.arange(11, dtype=np.float64)[::-1],  # 88 bytes, strided
          'small': np.arange(16, dtype=np.float32)}  # 64 bytes: not chunked
  data = serialization.msgpack_serialize(tree)
  raw = reference_unpack(data)
  assert raw['big'][wire_format.CHUNKED_MARKER] is True
  assert raw['big']['shape'] == {'0': 4, '1': 25}
  chunks = raw['big']['chunks']
  assert list(chunks) == [str(i) for i in range(7)]  # 16 floats per chunk
  assert [c[0] for c in chunks.values()] == [[16]] * 6 + [[4]]
  assert b''.join(c[2] for c in chunks.values()) == tree['big'].tobytes()
  assert len(raw['odd']['chunks']) == 2
  assert isinstance(raw['small'], list)  # a plain array extension
  restored = serialization.msgpack_restore(data)
  for key, value in tree.items():
    np.testing.assert_array_equal(restored[key], value)
    assert restored[key].dtype == value.dtype
  # A threshold below the item size still makes progress: one item a chunk.
  monkeypatch.setattr(wire_format, 'MAX_CHUNK_SIZE', 3)
  arr = np.arange(5, dtype=np.float64)
  raw = reference_unpack(serialization.msgpack_serialize(arr))
  assert len(raw['chunks']) == 5
  np.testing.assert_array_equal(
      serialization.msgpack_restore(serialization.msgpack_serialize(arr)), arr)


def test_msgpack_serialize_accepts_in_place():
  tree = {'a': np.ones(2)}
  assert serialization.msgpack_serialize(tree, in_place=True) == (
      reference_pack(tree))
  assert isinstance(tree['a'], np.ndarray)  # never modified
