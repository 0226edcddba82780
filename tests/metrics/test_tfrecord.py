"""Tests of flaxish.metrics._tfrecord: CRC32C and TFRecord framing."""
import struct

import pytest

from flaxish.metrics import _tfrecord


def _bitwise_crc32c(data: bytes) -> int:
  """An independent, bit-at-a-time CRC32C (no table)."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
  return crc ^ 0xFFFFFFFF


# Known answers: the standard check value, and RFC 3720 (iSCSI) appendix B.4.
_VECTORS = [
    (b'123456789', 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b'\xff' * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
    (b'', 0x0),
]


@pytest.mark.parametrize('data,expected', _VECTORS)
def test_crc32c_known_answers(data, expected):
  assert _tfrecord.crc32c(data) == expected
  assert _bitwise_crc32c(data) == expected


def test_crc32c_matches_bitwise_on_random_bytes():
  data = bytes((i * 7919 + 13) % 256 for i in range(3000))
  assert _tfrecord.crc32c(data) == _bitwise_crc32c(data)


def _masked(crc):
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32


def test_masked_crc32c():
  for data, _ in _VECTORS:
    assert _tfrecord.masked_crc32c(data) == _masked(_bitwise_crc32c(data))


def test_frame_record_layout():
  data = b'hello tensorboard'
  record = _tfrecord.frame_record(data)
  assert len(record) == 8 + 4 + len(data) + 4
  (length,) = struct.unpack('<Q', record[:8])
  assert length == len(data)
  (header_crc,) = struct.unpack('<I', record[8:12])
  assert header_crc == _masked(_bitwise_crc32c(record[:8]))
  assert record[12:12 + length] == data
  (data_crc,) = struct.unpack('<I', record[-4:])
  assert data_crc == _masked(_bitwise_crc32c(data))
