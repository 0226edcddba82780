"""PNG encoding with the standard library (zlib + struct)."""
import struct
import zlib

import numpy as np

__all__ = ['encode_png']

_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# Channels -> PNG colour type: grey, grey + alpha, RGB, RGBA.
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}


def _chunk(kind: bytes, data: bytes) -> bytes:
  crc = zlib.crc32(kind + data) & 0xFFFFFFFF
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', crc)


def encode_png(pixels: np.ndarray, compression: int = 6) -> bytes:
  """Encodes an image as an 8-bit, non-interlaced PNG.

  Arguments:
    pixels: `uint8` array of shape `(height, width, channels)` with 1 (grey),
      2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels; height and width >= 1.
    compression: zlib level, 0-9 (default 6).
  Returns:
    The PNG file's bytes.
  """
  pixels = np.asarray(pixels)
  if pixels.dtype != np.uint8:
    raise TypeError(f'encode_png needs uint8 pixels, got {pixels.dtype}.')
  if (pixels.ndim != 3 or pixels.shape[2] not in _COLOR_TYPES or
      pixels.shape[0] < 1 or pixels.shape[1] < 1):
    raise ValueError('encode_png needs pixels of shape (height, width, '
                     f'channels) with 1-4 channels, got {pixels.shape}.')
  height, width, channels = pixels.shape
  header = struct.pack('>IIBBBBB', width, height, 8,
                       _COLOR_TYPES[channels], 0, 0, 0)
  # Every scanline starts with its filter type; 0 means unfiltered.
  rows = pixels.reshape(height, width * channels)
  raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)
  return (_SIGNATURE + _chunk(b'IHDR', header) +
          _chunk(b'IDAT', zlib.compress(raw.tobytes(), compression)) +
          _chunk(b'IEND', b''))
