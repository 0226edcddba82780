"""Tests of flaxish.metrics._png, decoded with Pillow as the oracle."""
import io

import numpy as np
import pytest

from flaxish.metrics import _png

Image = pytest.importorskip('PIL.Image')


@pytest.mark.parametrize('channels,mode', [(1, 'L'), (2, 'LA'), (3, 'RGB'),
                                           (4, 'RGBA')])
def test_decodes_to_the_same_pixels(channels, mode):
  pixels = np.random.default_rng(channels).integers(
      0, 256, (7, 11, channels), dtype=np.uint8)
  data = _png.encode_png(pixels)
  assert data.startswith(b'\x89PNG\r\n\x1a\n')
  decoded = Image.open(io.BytesIO(data))
  decoded.load()  # Checks the zlib stream and chunk CRCs.
  assert decoded.mode == mode
  assert decoded.size == (11, 7)
  np.testing.assert_array_equal(
      np.asarray(decoded).reshape(7, 11, channels), pixels)


def test_one_pixel():
  decoded = Image.open(io.BytesIO(_png.encode_png(
      np.array([[[1, 2, 3]]], np.uint8))))
  assert decoded.getpixel((0, 0)) == (1, 2, 3)


def test_errors():
  with pytest.raises(TypeError, match='uint8'):
    _png.encode_png(np.zeros((2, 2, 3), np.float32))
  with pytest.raises(ValueError, match=r'\(2, 2, 5\)'):
    _png.encode_png(np.zeros((2, 2, 5), np.uint8))
  with pytest.raises(ValueError, match='height, width'):
    _png.encode_png(np.zeros((0, 2, 3), np.uint8))
