"""Tests of flaxish.metrics._wav: the RIFF header and the PCM samples."""
import struct

import numpy as np
import pytest

from flaxish.metrics import _wav


def test_header_and_samples():
  samples = np.array([[0.0, 1.0], [-1.0, 0.5], [2.0, -3.0], [np.nan, 0.25]])
  data = _wav.encode_wav(samples, 16000)
  # Parse the canonical 44-byte header by hand.
  riff, size, wave, fmt, fmt_size = struct.unpack('<4sI4s4sI', data[:20])
  assert (riff, wave, fmt, fmt_size) == (b'RIFF', b'WAVE', b'fmt ', 16)
  assert size == len(data) - 8
  tag, channels, rate, byte_rate, align, bits = struct.unpack(
      '<HHIIHH', data[20:36])
  assert (tag, channels, rate, bits) == (1, 2, 16000, 16)
  assert (byte_rate, align) == (16000 * 4, 4)
  chunk, length = struct.unpack('<4sI', data[36:44])
  assert (chunk, length) == (b'data', 4 * 2 * 2)
  pcm = np.frombuffer(data[44:], '<i2').reshape(4, 2)
  np.testing.assert_array_equal(
      pcm, [[0, 32767], [-32767, 16384], [32767, -32767], [0, 8192]])


def test_bad_shape():
  with pytest.raises(ValueError, match=r'\(frames, channels\)'):
    _wav.encode_wav(np.zeros(5), 8000)
