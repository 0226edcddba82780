"""Tests of flaxish.metrics.tensorboard.SummaryWriter.

The oracle is the real TensorBoard reader (the `tensorboard` package, without
TensorFlow): `EventAccumulator`, its record reader (which checks every CRC),
the protobuf classes it ships and `data_compat`, which turns the classic
summaries into what the dashboards display. Images are decoded with Pillow.
"""
import gc
import io
import os
import re
import socket
import struct
import subprocess
import sys
import time
import wave

import jax.numpy as jnp
import numpy as np
import pytest

from flaxish.metrics import SummaryWriter
from flaxish.metrics import tensorboard

ea = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
event_pb2 = pytest.importorskip('tensorboard.compat.proto.event_pb2')
summary_pb2 = pytest.importorskip('tensorboard.compat.proto.summary_pb2')
tensor_util = pytest.importorskip('tensorboard.util.tensor_util')

_ALL = {'scalars': 0, 'images': 0, 'audio': 0, 'histograms': 0,
        'tensors': 0, 'compressedHistograms': 0}


def _accumulator(log_dir):
  acc = ea.EventAccumulator(os.fspath(log_dir), size_guidance=_ALL)
  acc.Reload()
  return acc


def _bitwise_crc32c(data):
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
  return crc ^ 0xFFFFFFFF


def _masked(crc):
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) % 2**32


def _raw_events(path):
  """Parses the TFRecord framing by hand, checking both CRCs with an
  independent CRC32C, and the records with TensorBoard's Event class."""
  data = open(path, 'rb').read()
  events, pos = [], 0
  while pos < len(data):
    header = data[pos:pos + 8]
    (length,) = struct.unpack('<Q', header)
    (header_crc,) = struct.unpack('<I', data[pos + 8:pos + 12])
    assert header_crc == _masked(_bitwise_crc32c(header))
    record = data[pos + 12:pos + 12 + length]
    assert len(record) == length
    (data_crc,) = struct.unpack('<I',
                                data[pos + 12 + length:pos + 16 + length])
    assert data_crc == _masked(_bitwise_crc32c(record))
    events.append(event_pb2.Event.FromString(record))
    pos += 16 + length
  return events


def test_file_name_framing_and_version_record(tmp_path):
  before = time.time()
  with SummaryWriter(tmp_path / 'logs') as writer:
    writer.scalar('loss', 0.5, 3)
  name = os.path.basename(writer.path)
  match = re.fullmatch(r'events\.out\.tfevents\.(\d{10})\.(.+)', name)
  assert match and match.group(2) == socket.gethostname()
  assert abs(int(match.group(1)) - before) <= 2
  assert os.path.dirname(writer.path) == os.fspath(tmp_path / 'logs')
  first, second = _raw_events(writer.path)
  assert first.file_version == 'brain.Event:2'
  assert abs(first.wall_time - before) < 60
  assert second.step == 3
  assert second.summary.value[0].tag == 'loss'
  assert second.summary.value[0].simple_value == 0.5
  assert abs(second.wall_time - before) < 60


def test_scalars(tmp_path):
  with SummaryWriter(tmp_path) as writer:
    writer.scalar('loss', 2.5, 0)
    writer.scalar('loss', np.float32(1.25), 1)
    writer.scalar('loss', jnp.asarray(0.5, jnp.bfloat16), np.int64(2))
    writer.scalar('loss', jnp.array([0.125]), jnp.int32(3))
    writer.scalar('accuracy', 1, 0)
  acc = _accumulator(tmp_path)
  assert [(e.step, e.value) for e in acc.Scalars('loss')] == [
      (0, 2.5), (1, 1.25), (2, 0.5), (3, 0.125)]
  assert [(e.step, e.value) for e in acc.Scalars('accuracy')] == [(0, 1.0)]


def _png_pixels(encoded):
  image_module = pytest.importorskip('PIL.Image')
  decoded = image_module.open(io.BytesIO(encoded))
  decoded.load()
  return decoded.mode, np.asarray(decoded)


def test_images(tmp_path):
  grey = np.linspace(0, 1, 12).reshape(3, 4)
  rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
  rgba = np.random.default_rng(1).random((2, 3, 4)).astype(np.float32)
  batch = np.random.default_rng(2).integers(0, 256, (4, 2, 5),
                                            dtype=np.uint8)
  with SummaryWriter(tmp_path) as writer:
    writer.image('grey', grey, 1)
    writer.image('grey1', grey[..., None] * 2 - 0.5, 1)  # Clipped.
    writer.image('rgb', jnp.asarray(rgb), 2)
    writer.image('rgba', rgba, 3)
    writer.image('batch', batch, 4)  # (K, H, W); max_outputs=3.
    writer.image('one', batch[:2, ..., None], 5, max_outputs=1)
    writer.image('hwc', batch[..., :3], 6)  # Last dim 3: one RGB image.
  acc = _accumulator(tmp_path)
  assert sorted(acc.Tags()['images']) == sorted([
      'grey', 'grey1', 'rgb', 'rgba', 'batch/image/0', 'batch/image/1',
      'batch/image/2', 'one/image/0', 'hwc'])
  hwc = acc.Images('hwc')[0]
  assert (hwc.height, hwc.width) == (4, 2)

  event = acc.Images('grey')[0]
  assert (event.step, event.height, event.width) == (1, 3, 4)
  mode, pixels = _png_pixels(event.encoded_image_string)
  assert mode == 'L'
  np.testing.assert_array_equal(pixels, np.round(grey * 255))
  _, pixels = _png_pixels(acc.Images('grey1')[0].encoded_image_string)
  np.testing.assert_array_equal(
      pixels, np.round(np.clip(grey * 2 - 0.5, 0, 1) * 255))
  mode, pixels = _png_pixels(acc.Images('rgb')[0].encoded_image_string)
  assert mode == 'RGB'
  np.testing.assert_array_equal(pixels, rgb)
  mode, pixels = _png_pixels(acc.Images('rgba')[0].encoded_image_string)
  assert mode == 'RGBA'
  np.testing.assert_array_equal(pixels, np.round(rgba * 255))
  for i in range(3):
    _, pixels = _png_pixels(
        acc.Images(f'batch/image/{i}')[0].encoded_image_string)
    np.testing.assert_array_equal(pixels, batch[i])


def test_audio(tmp_path):
  t = np.arange(400) / 8000
  mono = 0.5 * np.sin(2 * np.pi * 440 * t)
  stereo = np.stack([np.stack([mono, -mono], -1) * k for k in (1, 2, 3)])
  with SummaryWriter(tmp_path) as writer:
    writer.audio('mono', mono, 7, sample_rate=8000)
    writer.audio('stereo', stereo, 8, sample_rate=8000, max_outputs=2)
  acc = _accumulator(tmp_path)
  assert sorted(acc.Tags()['audio']) == [
      'mono', 'stereo/audio/0', 'stereo/audio/1']

  event = acc.Audio('mono')[0]
  assert (event.step, event.content_type, event.sample_rate,
          event.length_frames) == (7, 'audio/wav', 8000, 400)
  with wave.open(io.BytesIO(event.encoded_audio_string)) as clip:
    assert (clip.getnchannels(), clip.getframerate(), clip.getnframes(),
            clip.getsampwidth()) == (1, 8000, 400, 2)
    samples = np.frombuffer(clip.readframes(400), '<i2') / 32767
  np.testing.assert_allclose(samples, mono, atol=1 / 32767)

  event = acc.Audio('stereo/audio/1')[0]
  with wave.open(io.BytesIO(event.encoded_audio_string)) as clip:
    assert clip.getnchannels() == 2
    samples = np.frombuffer(clip.readframes(400), '<i2').reshape(400, 2)
  np.testing.assert_allclose(samples / 32767, np.clip(stereo[1], -1, 1),
                             atol=1 / 32767)


def test_histograms(tmp_path):
  values = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
  with SummaryWriter(tmp_path) as writer:
    writer.histogram('hand', [0., 1., 1., 2., 2., 2., 3.], 1, bins=3)
    writer.histogram('normal', jnp.asarray(values), 2)
    writer.histogram('edges', [0.5, 1.5, 1.5, 9.], 3, bins=[0, 1, 2, 10])
    writer.histogram('empty', np.zeros((0,)), 4)
  acc = _accumulator(tmp_path)
  hand = acc.Histograms('hand')[0].histogram_value
  assert (hand.min, hand.max, hand.num, hand.sum, hand.sum_squares) == (
      0, 3, 7, 11, 23)
  assert list(hand.bucket_limit) == [1, 2, 3]
  assert list(hand.bucket) == [1, 2, 4]  # The last bin is closed.

  normal = acc.Histograms('normal')[0].histogram_value
  flat = values.astype(np.float64).reshape(-1)
  assert len(normal.bucket) == len(normal.bucket_limit) == 30
  assert sum(normal.bucket) == normal.num == 1000
  assert normal.min == flat.min() and normal.max == flat.max()
  assert normal.bucket_limit[-1] == flat.max()
  np.testing.assert_allclose(normal.sum, flat.sum())
  np.testing.assert_allclose(normal.sum_squares, (flat**2).sum())
  assert np.all(np.diff(normal.bucket_limit) > 0)

  edges = acc.Histograms('edges')[0].histogram_value
  assert list(edges.bucket_limit) == [1, 2, 10]
  assert list(edges.bucket) == [1, 2, 1]
  assert acc.Histograms('empty')[0].histogram_value.num == 0
  # TensorBoard's distribution dashboard works on compressed histograms.
  assert acc.CompressedHistograms('normal')[0].step == 2


def test_dashboards_migrate_the_classic_summaries(tmp_path):
  """data_compat turns classic values into what the plugins display."""
  data_compat = pytest.importorskip('tensorboard.data_compat')
  with SummaryWriter(tmp_path) as writer:
    writer.scalar('s', 1.5, 1)
    writer.image('i', np.zeros((2, 3)), 1)
    writer.audio('a', np.zeros(10), 1, sample_rate=100)
    writer.histogram('h', [1., 2., 3.], 1, bins=2)
  values = {v.tag: data_compat.migrate_value(v)
            for e in _raw_events(writer.path)[1:] for v in e.summary.value}
  def plugin(tag):
    return values[tag].metadata.plugin_data.plugin_name
  assert [plugin(t) for t in 's i a h'.split()] == [
      'scalars', 'images', 'audio', 'histograms']
  assert tensor_util.make_ndarray(values['s'].tensor) == 1.5
  width, height, _ = tensor_util.make_ndarray(values['i'].tensor)
  assert (width, height) == (b'3', b'2')
  np.testing.assert_allclose(tensor_util.make_ndarray(values['h'].tensor),
                             [[1, 2, 1], [2, 3, 2]])


def test_text(tmp_path):
  with SummaryWriter(tmp_path) as writer:
    writer.text('notes', '# Run 1\nlr = **0.1** — ünïcode', 5)
    writer.text('raw', b'bytes too', 6)
  acc = _accumulator(tmp_path)
  assert acc.SummaryMetadata('notes').plugin_data.plugin_name == 'text'
  event = acc.Tensors('notes')[0]
  assert event.step == 5
  text = tensor_util.make_ndarray(event.tensor_proto)
  assert text.shape == ()
  assert text.item().decode('utf-8') == '# Run 1\nlr = **0.1** — ünïcode'
  raw = acc.Tensors('raw')[0].tensor_proto
  assert tensor_util.make_ndarray(raw).item() == b'bytes too'


def test_write_tensors_and_metadata(tmp_path):
  metadata = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(
          plugin_name='custom', content=b'\x01\x02'))
  arrays = {
      'f32': np.arange(6, dtype=np.float32).reshape(2, 3),
      'f64': np.array(2.5),
      'i64': np.array([-1, 2**40], np.int64),
      'u8': np.array([[1], [255]], np.uint8),
      'bool': np.array([True, False]),
      'f16': np.array([0.5, -2], np.float16),
      'big_endian': np.array([1, 2], '>i4'),
  }
  with SummaryWriter(tmp_path) as writer:
    for tag, array in arrays.items():
      writer.write(tag, array, 1)
    writer.write('strings', np.array(['a', 'βc']), 2)
    writer.write('jax', jnp.ones((2, 2), jnp.int32), 3,
                 metadata=metadata)
    writer.write('serialized', [1.0], 4,
                 metadata=metadata.SerializeToString())
  acc = _accumulator(tmp_path)
  for tag, array in arrays.items():
    got = tensor_util.make_ndarray(acc.Tensors(tag)[0].tensor_proto)
    assert got.shape == array.shape
    np.testing.assert_array_equal(got, array)
  strings = tensor_util.make_ndarray(acc.Tensors('strings')[0].tensor_proto)
  assert [s.decode('utf-8') for s in strings] == ['a', 'βc']
  np.testing.assert_array_equal(
      tensor_util.make_ndarray(acc.Tensors('jax')[0].tensor_proto),
      np.ones((2, 2), np.int32))
  for tag in ('jax', 'serialized'):
    assert acc.SummaryMetadata(tag) == metadata


def test_hparams(tmp_path):
  hp_metadata = pytest.importorskip('tensorboard.plugins.hparams.metadata')
  with SummaryWriter(tmp_path) as writer:
    writer.hparams({'learning_rate': np.float32(0.5), 'batch_size': 128,
                    'nesterov': True, 'optimizer': 'momentum',
                    'model': {'depth': jnp.int32(3), 'act': None}})
  acc = _accumulator(tmp_path)
  metadata = acc.SummaryMetadata('_hparams_/session_start_info')
  assert metadata.plugin_data.plugin_name == 'hparams'
  info = hp_metadata.parse_session_start_info_plugin_data(
      metadata.plugin_data.content)
  assert abs(info.start_time_secs - time.time()) < 60
  got = {name: value.WhichOneof('kind') for name, value in
         info.hparams.items()}
  assert got == {'learning_rate': 'number_value',
                 'batch_size': 'number_value', 'nesterov': 'bool_value',
                 'optimizer': 'string_value', 'model.depth': 'number_value',
                 'model.act': 'string_value'}
  assert info.hparams['learning_rate'].number_value == 0.5
  assert info.hparams['batch_size'].number_value == 128
  assert info.hparams['nesterov'].bool_value
  assert info.hparams['optimizer'].string_value == 'momentum'
  assert info.hparams['model.depth'].number_value == 3
  assert info.hparams['model.act'].string_value == 'None'


def _record_count(path):
  return len(_raw_events(path))


def test_buffering_and_flush(tmp_path):
  writer = SummaryWriter(tmp_path, max_queue=3, flush_secs=1000)
  assert _record_count(writer.path) == 1  # The version record, at once.
  writer.scalar('a', 1, 1)
  writer.scalar('a', 2, 2)
  assert _record_count(writer.path) == 1
  writer.scalar('a', 3, 3)  # The queue is full.
  assert _record_count(writer.path) == 4
  writer.scalar('a', 4, 4)
  writer.flush()
  assert _record_count(writer.path) == 5
  writer.scalar('a', 5, 5)
  writer.close()
  writer.close()  # Safe to repeat.
  assert _record_count(writer.path) == 6


def test_flush_secs(tmp_path):
  writer = SummaryWriter(tmp_path, flush_secs=0)
  writer.scalar('a', 1, 1)
  assert _record_count(writer.path) == 2
  writer.close()


def test_garbage_collection_flushes(tmp_path):
  writer = SummaryWriter(tmp_path)
  path = writer.path
  writer.scalar('a', 1, 1)
  del writer
  gc.collect()
  assert _record_count(path) == 2


def test_two_writers_never_share_a_file(tmp_path):
  with SummaryWriter(tmp_path) as first, SummaryWriter(tmp_path) as second:
    first.scalar('a', 1., 1)
    second.scalar('b', 2., 1)
  assert first.path != second.path
  assert 'tfevents' in os.path.basename(second.path)
  assert [e.summary.value[0].tag for e in _raw_events(first.path)[1:]] == [
      'a']
  assert [e.summary.value[0].tag for e in _raw_events(second.path)[1:]] == [
      'b']


def test_errors(tmp_path):
  writer = SummaryWriter(tmp_path)
  with pytest.raises(ValueError, match=r"scalar 'loss'.*shape \(3,\)"):
    writer.scalar('loss', np.ones(3), 1)
  with pytest.raises(TypeError, match='step must be an integer'):
    writer.scalar('loss', 1., 1.5)
  with pytest.raises(TypeError, match='non-empty str'):
    writer.scalar('', 1., 1)
  with pytest.raises(ValueError, match=r"image 'im'.*\(2, 3, 5, 2\)"):
    writer.image('im', np.zeros((2, 3, 5, 2)), 1)
  with pytest.raises(ValueError, match=r"image 'im'.*\[0, 255\].*\[-1, 3\]"):
    writer.image('im', np.array([[-1, 3]]), 1)
  with pytest.raises(ValueError, match=r"audio 'au'.*got \(1, 2, 3, 4\)"):
    writer.audio('au', np.zeros((1, 2, 3, 4)), 1)
  with pytest.raises(ValueError, match='sample_rate must be a positive'):
    writer.audio('au', np.zeros(4), 1, sample_rate=0)
  with pytest.raises(ValueError, match=r"histogram 'h': 2 of 3 .*NaN or inf"):
    writer.histogram('h', [1., np.nan, np.inf], 1)
  with pytest.raises(ValueError, match=r"histogram 'h': invalid bins"):
    writer.histogram('h', [1., 2.], 1, bins=[3, 1])
  with pytest.raises(TypeError, match=r"text 't'.*str or bytes, got int"):
    writer.text('t', 5, 1)
  with pytest.raises(TypeError, match=r"write 'w'.*metadata"):
    writer.write('w', [1.], 1, metadata={'plugin_name': 'x'})
  with pytest.raises(TypeError, match=r"write 'w'.*only str or bytes"):
    writer.write('w', np.array([1, 'a'], dtype=object), 1)
  with pytest.raises(TypeError, match=r"write 'w': unsupported dtype"):
    writer.write('w', np.array(['2020-01-01'], 'datetime64[D]'), 1)
  with pytest.raises(TypeError, match='hparams must be a mapping'):
    writer.hparams([('lr', 0.1)])
  writer.close()
  with pytest.raises(ValueError, match='is closed'):
    writer.scalar('loss', 1., 2)
  # Nothing invalid reached the file.
  assert _record_count(writer.path) == 1


def test_imports_without_tensorflow_tensorboard_or_matplotlib(tmp_path):
  code = (
      'import sys\n'
      'for name in ("tensorflow", "tensorboard", "matplotlib"):\n'
      '  sys.modules[name] = None  # Any import of them fails.\n'
      'from flaxish.metrics import SummaryWriter\n'
      f'with SummaryWriter({os.fspath(tmp_path)!r}) as w:\n'
      '  w.scalar("a", 1., 1)\n'
      '  w.image("b", [[0.5]], 1)\n'
      '  w.text("c", "x", 1)\n'
      '  w.hparams({"lr": 0.1})\n')
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120,
                 env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  acc = _accumulator(tmp_path)
  assert [e.value for e in acc.Scalars('a')] == [1.0]


def test_module_exports():
  assert tensorboard.__all__ == ['SummaryWriter']
  assert tensorboard.SummaryWriter is SummaryWriter
