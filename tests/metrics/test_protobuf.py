"""Tests of flaxish.metrics._protobuf: the minimal wire encoder."""
import struct

import numpy as np
import pytest

from flaxish.metrics import _protobuf as pb


@pytest.mark.parametrize('n,encoded', [
    (0, b'\x00'), (1, b'\x01'), (127, b'\x7f'), (128, b'\x80\x01'),
    (300, b'\xac\x02'), (2**63 - 1, b'\xff' * 8 + b'\x7f'),
    (-1, b'\xff' * 9 + b'\x01'), (-2, b'\xfe' + b'\xff' * 8 + b'\x01'),
])
def test_varint(n, encoded):
  assert pb.varint(n) == encoded


def test_fields():
  # Keys are (field << 3) | wire type.
  assert pb.int_field(2, 150) == b'\x10\x96\x01'
  assert pb.double_field(1, 1.5) == b'\x09' + struct.pack('<d', 1.5)
  assert pb.float_field(2, 0.25) == b'\x15' + struct.pack('<f', 0.25)
  assert pb.string_field(1, 'testing') == b'\x0a\x07testing'
  assert pb.bytes_field(4, b'') == b'\x22\x00'
  assert pb.packed_doubles_field(6, [1.0, 2.0]) == (
      b'\x32\x10' + struct.pack('<2d', 1.0, 2.0))


def test_float_field_overflows_to_inf():
  assert pb.float_field(2, 1e300)[1:] == np.float32(np.inf).tobytes()


def test_a_message_parses_with_the_protobuf_package():
  event_pb2 = pytest.importorskip('tensorboard.compat.proto.event_pb2')
  data = (pb.double_field(1, 12.5) + pb.int_field(2, -7) +
          pb.string_field(3, 'brain.Event:2'))
  event = event_pb2.Event.FromString(data)
  assert event.wall_time == 12.5
  assert event.step == -7
  assert event.file_version == 'brain.Event:2'
