"""Tests of flaxish.metrics.plots.plot_curves."""
import struct
import sys

import pytest

from flaxish.metrics import JsonlWriter, plot_curves

pytest.importorskip('matplotlib')


def _records():
  records = []
  for epoch in range(1, 6):
    records.append({'step': 100 * epoch, 'split': 'train', 'epoch': epoch,
                    'loss': 1 / epoch, 'accuracy': 1 - 0.5 / epoch})
    records.append({'step': 100 * epoch, 'split': 'test', 'epoch': epoch,
                    'loss': 1.2 / epoch, 'accuracy': 1 - 0.6 / epoch})
  return records


def _png_size(path):
  data = open(path, 'rb').read()
  assert data[:8] == b'\x89PNG\r\n\x1a\n'
  assert data[12:16] == b'IHDR'
  return struct.unpack('>II', data[16:24])


def test_writes_a_png_of_the_expected_size(tmp_path):
  path = tmp_path / 'plots' / 'curves.png'
  assert plot_curves(_records(), path) == str(path)
  assert _png_size(path) == (2 * 500, 400)  # Two 5 x 4 inch subplots.


def test_reads_a_jsonl_file_and_plots_one_metric(tmp_path):
  log = tmp_path / 'metrics.jsonl'
  with JsonlWriter(log) as writer:
    for step in range(0, 50, 10):
      writer.write(step, loss=1.0 / (step + 1))
      writer.write(step, split='test', loss=2.0 / (step + 1))
  path = plot_curves(log, tmp_path / 'loss.png', metrics='loss',
                     size=(4, 3), dpi=50)
  assert _png_size(path) == (200, 150)


def test_the_image_shows_the_curves(tmp_path):
  image = pytest.importorskip('matplotlib.image')
  path = plot_curves(_records(), tmp_path / 'c.png', metrics=('loss',))
  pixels = image.imread(path)[..., :3]
  # Two coloured lines (the default colour cycle), not a blank canvas.
  coloured = (pixels.max(-1) - pixels.min(-1)) > 0.3
  assert coloured.sum() > 200


def test_unknown_metric_lists_the_available_ones(tmp_path):
  with pytest.raises(ValueError, match=r"'f1'.*\['accuracy', 'loss'\]"):
    plot_curves(_records(), tmp_path / 'c.png', metrics=('loss', 'f1'))


def test_no_metric_name(tmp_path):
  with pytest.raises(ValueError, match='needs at least one metric name'):
    plot_curves(_records(), tmp_path / 'c.png', metrics=())
  assert not (tmp_path / 'c.png').exists()


def test_missing_x_key(tmp_path):
  with pytest.raises(ValueError, match="no 'wall'"):
    plot_curves(_records(), tmp_path / 'c.png', x='wall')


def test_clear_error_without_matplotlib(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'matplotlib', None)
  with pytest.raises(ImportError, match='pip install matplotlib'):
    plot_curves(_records(), tmp_path / 'c.png')
  assert not (tmp_path / 'c.png').exists()
