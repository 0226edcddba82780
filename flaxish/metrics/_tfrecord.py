"""TFRecord framing, the container format of TensorBoard event files.

Each record is:

    uint64 length          (little-endian)
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

CRC32C is the Castagnoli CRC (reflected polynomial 0x82F63B78, initial value
and final xor 0xFFFFFFFF), computed here in pure Python with a 256-entry
table: about 0.1 s per MiB, which is negligible for summaries (a scalar event
is about 50 bytes; images and audio are compressed first).
"""
import struct

__all__ = ['crc32c', 'masked_crc32c', 'frame_record']

_POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reflected.
_MASK_DELTA = 0xA282EAD8
_UINT32 = 0xFFFFFFFF


def _make_table():
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ _POLYNOMIAL if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_TABLE = _make_table()


def crc32c(data: bytes) -> int:
  """The CRC32C (Castagnoli) checksum of `data`, as an unsigned 32-bit int."""
  table = _TABLE
  crc = _UINT32
  for byte in bytes(data):
    crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ _UINT32


def masked_crc32c(data: bytes) -> int:
  """The CRC32C of `data`, rotated right by 15 bits plus a constant, as
  TFRecord stores it (so a CRC of data that holds CRCs stays robust)."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _UINT32


def frame_record(data: bytes) -> bytes:
  """`data` framed as one TFRecord: length, its CRC, data, data CRC."""
  data = bytes(data)
  header = struct.pack('<Q', len(data))
  return (header + struct.pack('<I', masked_crc32c(header)) + data +
          struct.pack('<I', masked_crc32c(data)))
