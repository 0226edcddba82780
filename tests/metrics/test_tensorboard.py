"""Tests of flaxish.metrics.tensorboard.SummaryWriter.

The oracle is TensorBoard's own reader (`EventFileLoader`, which checks every
record's CRC and migrates the summaries into what the dashboards display) and
its `tensor_util`; PNGs are decoded with Pillow, WAVs with `wave`. Records are
read while the writer is still open and never flushed: each must be readable
as soon as the call that writes it returns.
"""
import gc
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import wave

import jax.numpy as jnp
import numpy as np
import pytest

from flaxish.metrics import SummaryWriter
from flaxish.metrics import tensorboard

efl = pytest.importorskip(
    'tensorboard.backend.event_processing.event_file_loader')
event_pb2 = pytest.importorskip('tensorboard.compat.proto.event_pb2')
summary_pb2 = pytest.importorskip('tensorboard.compat.proto.summary_pb2')
tensor_util = pytest.importorskip('tensorboard.util.tensor_util')
Image = pytest.importorskip('PIL.Image')


def _values(writer):
  """{tag: [(step, value), ...]} as TensorBoard's dashboards see them."""
  values = {}
  for event in efl.EventFileLoader(writer.path).Load():
    assert event.wall_time > 0
    for value in event.summary.value:
      values.setdefault(value.tag, []).append((event.step, value))
  return values


def _raw_events(writer):
  """The events as written, before TensorBoard's migrations."""
  return list(efl.LegacyEventFileLoader(writer.path).Load())


def _one(writer, tag, step=1):
  (got_step, value), = _values(writer)[tag]
  assert got_step == step
  return value


def _plugin(value):
  return value.metadata.plugin_data.plugin_name


@pytest.fixture
def writer(tmp_path):
  writer = SummaryWriter(tmp_path / 'logs')
  yield writer
  writer.close()


def test_file_name_and_version_record(tmp_path):
  before = time.time()
  writer = SummaryWriter(tmp_path / 'a' / 'b')  # Parents are created.
  name = os.path.basename(writer.path)
  match = re.fullmatch(r'events\.out\.tfevents\.(\d{10})\.(.+)\.(\d+)\.(\d+)',
                       name)
  assert match and match.group(2) == socket.gethostname()
  assert abs(int(match.group(1)) - before) <= 2
  assert int(match.group(3)) == os.getpid()
  assert writer.log_dir == os.fspath(tmp_path / 'a' / 'b')
  assert os.path.dirname(writer.path) == writer.log_dir
  (first,) = _raw_events(writer)  # Readable before any flush.
  assert first.file_version == 'brain.Event:2'
  assert abs(first.wall_time - before) < 60
  writer.close()


def test_scalars_are_readable_at_once(writer):
  writer.scalar('loss', 99.1232, 1)
  value = _one(writer, 'loss')
  assert _plugin(value) == 'scalars'
  assert tensor_util.make_ndarray(value.tensor) == np.float32(99.1232)
  writer.scalar('loss', np.float32(1.25), np.int64(2))
  writer.scalar('loss', jnp.asarray(0.5, jnp.bfloat16), jnp.int32(3))
  writer.scalar('loss', jnp.array([0.125]), 4)
  writer.scalar('accuracy', 1, 0)
  values = _values(writer)
  assert [(s, float(tensor_util.make_ndarray(v.tensor)))
          for s, v in values['loss']] == [
              (1, np.float32(99.1232)), (2, 1.25), (3, 0.5), (4, 0.125)]
  assert tensor_util.make_ndarray(values['accuracy'][0][1].tensor) == 1.0
  assert _raw_events(writer)[1].summary.value[0].simple_value == np.float32(
      99.1232)


def _png(value, index=0):
  """The mode and pixels of the index-th PNG of an images value."""
  strings = tensor_util.make_ndarray(value.tensor)
  decoded = Image.open(io.BytesIO(strings[2 + index]))
  decoded.load()
  pixels = np.asarray(decoded)
  assert (strings[0], strings[1]) == (str(pixels.shape[1]).encode(),
                                      str(pixels.shape[0]).encode())
  return decoded.mode, pixels


def _tf_uint8(x):
  """tf.image.convert_image_dtype(x, tf.uint8, saturate=True), written out:
  scale by 255.5, saturate to [0, 255], truncate."""
  return np.trunc(np.clip(np.asarray(x, np.float64) * 255.5, 0, 255))


def test_image_rgb_uint8_and_floats(writer):
  rgb = np.random.default_rng(0).integers(0, 256, (30, 30, 3), np.uint8)
  floats = np.random.default_rng(1).uniform(0, 1, (30, 30, 3))
  writer.image('rgb', jnp.asarray(rgb), 1)
  writer.image('floats', floats, 1)
  value = _one(writer, 'rgb')
  assert _plugin(value) == 'images'
  mode, pixels = _png(value)
  assert mode == 'RGB'
  np.testing.assert_array_equal(pixels, rgb)
  _, pixels = _png(_one(writer, 'floats'))
  np.testing.assert_array_equal(pixels, _tf_uint8(floats))
  raw = _raw_events(writer)[1].summary.value[0].image
  assert (raw.height, raw.width, raw.colorspace) == (30, 30, 3)


def test_image_float_range_and_types(writer):
  floats = np.array([[0., 0.5, 1., 1.5, -0.2, 0.999, np.nan]])
  writer.image('floats', floats, 1)
  _, pixels = _png(_one(writer, 'floats'))
  np.testing.assert_array_equal(pixels[..., 0], [[0, 127, 255, 255, 0, 255,
                                                  0]])
  writer.image('ints', np.array([[-5, 0, 7, 255, 300]]), 1)  # Clipped.
  writer.image('bools', np.array([[True, False]]), 1)
  writer.image('f16', jnp.full((2, 2), 0.25, jnp.bfloat16), 1)
  _, pixels = _png(_one(writer, 'ints'))
  np.testing.assert_array_equal(pixels[..., 0], [[0, 0, 7, 255, 255]])
  _, pixels = _png(_one(writer, 'bools'))
  np.testing.assert_array_equal(pixels[..., 0], [[255, 0]])
  _, pixels = _png(_one(writer, 'f16'))
  np.testing.assert_array_equal(pixels, np.full((2, 2, 3), _tf_uint8(0.25)))


def test_grey_images_are_stored_as_rgb(writer):
  grey = np.random.default_rng(2).integers(0, 256, (30, 20), np.uint8)
  writer.image('2d', grey, 1)
  writer.image('1channel', grey[..., None], 1)
  for tag in ('2d', '1channel'):
    mode, pixels = _png(_one(writer, tag))
    assert mode == 'RGB' and pixels.shape == (30, 20, 3)
    np.testing.assert_array_equal(pixels, np.stack([grey] * 3, -1))


def test_rgba_and_batches(writer):
  rgba = np.random.default_rng(3).random((2, 3, 4))
  batch = np.random.default_rng(4).integers(0, 256, (4, 2, 5), np.uint8)
  writer.image('rgba', rgba, 1)
  writer.image('batch', batch, 2)  # (K, H, W); max_outputs=3.
  writer.image('one', batch[:2, ..., None], 3, max_outputs=1)
  writer.image('hwc', batch[..., :3], 4)  # Last dim 3: one RGB image.
  mode, pixels = _png(_one(writer, 'rgba'))
  assert mode == 'RGBA'
  np.testing.assert_array_equal(pixels, _tf_uint8(rgba))
  values = _values(writer)
  assert sorted(values) == ['batch/image/0', 'batch/image/1',
                            'batch/image/2', 'hwc', 'one/image/0', 'rgba']
  for i in range(3):
    _, pixels = _png(_one(writer, f'batch/image/{i}', step=2))
    np.testing.assert_array_equal(pixels[..., 1], batch[i])
  assert _png(_one(writer, 'hwc', step=4))[1].shape == (4, 2, 3)


def _wav(value):
  """(channels, rate, sample width, int16 samples (frames, channels))."""
  audio_metadata = pytest.importorskip('tensorboard.plugins.audio.metadata')
  assert _plugin(value) == 'audio'
  encoding = audio_metadata.parse_plugin_metadata(
      value.metadata.plugin_data.content).encoding
  assert encoding == audio_metadata.Encoding.Value('WAV')
  (data,) = tensor_util.make_ndarray(value.tensor)
  with wave.open(io.BytesIO(data)) as clip:
    samples = np.frombuffer(clip.readframes(clip.getnframes()), '<i2')
    return (clip.getnchannels(), clip.getframerate(), clip.getsampwidth(),
            samples.reshape(-1, clip.getnchannels()))


def test_audio_batches_clipped_as_2020(writer):
  clips = np.random.default_rng(5).uniform(-2, 2, (3, 4800, 2))
  writer.audio('stereo', clips, 1, sample_rate=16000, max_outputs=2)
  values = _values(writer)
  assert sorted(values) == ['stereo/audio/0', 'stereo/audio/1']
  for i in range(2):
    channels, rate, width, samples = _wav(_one(writer, f'stereo/audio/{i}'))
    assert (channels, rate, width, samples.shape) == (2, 16000, 2, (4800, 2))
    # tf.audio.encode_wav: round(x * 2**15), saturated to int16.
    expected = np.clip(np.round(np.clip(clips[i], -1, 1) * 32768),
                       -32768, 32767)
    np.testing.assert_array_equal(samples, expected)
    np.testing.assert_allclose(samples / 32768, np.clip(clips[i], -1, 1),
                               atol=1 / 32768)
  raw = _raw_events(writer)[1].summary.value[0].audio
  assert (raw.sample_rate, raw.num_channels, raw.length_frames,
          raw.content_type) == (16000, 2, 4800, 'audio/wav')


def test_audio_mono_shapes_and_default_rate(writer):
  t = np.arange(441) / 44100
  mono = 0.5 * np.sin(2 * np.pi * 440 * t)
  writer.audio('one', jnp.asarray(mono), 1)  # (frames,)
  writer.audio('two', np.stack([mono, -mono]), 1)  # (K, frames)
  channels, rate, _, samples = _wav(_one(writer, 'one'))
  assert (channels, rate) == (1, 44100)
  np.testing.assert_allclose(samples[:, 0] / 32768, mono, atol=1 / 32768)
  channels, _, _, samples = _wav(_one(writer, 'two/audio/1'))
  assert channels == 1
  np.testing.assert_allclose(samples[:, 0] / 32768, -mono, atol=1 / 32768)


def _histogram(value):
  """(left, right, count) rows, as the histograms dashboard reads them."""
  assert _plugin(value) == 'histograms'
  return tensor_util.make_ndarray(value.tensor)


def test_histogram_default_30_bins_as_2020(writer):
  writer.histogram('h', np.arange(1000), 1)
  rows = _histogram(_one(writer, 'h'))
  counts, edges = np.histogram(np.arange(1000), bins=30)
  assert rows.shape == (30, 3)
  np.testing.assert_allclose(rows, np.stack([edges[:-1], edges[1:], counts],
                                            -1))
  np.testing.assert_allclose(rows[0], (0.0, 33.3, 34.0))


def test_histogram_bins_and_statistics(writer):
  values = np.random.default_rng(6).normal(size=(50, 20)).astype(np.float32)
  writer.histogram('two', np.arange(1000), 1, bins=2)
  writer.histogram('normal', jnp.asarray(values), 2)
  writer.histogram('edges', [0.5, 1.5, 1.5, 9.], 3, bins=[0, 1, 2, 10])
  writer.histogram('empty', np.zeros((0,)), 4)
  np.testing.assert_allclose(_histogram(_one(writer, 'two')),
                             [[0, 499.5, 500], [499.5, 999, 500]])
  # The outer edges shown are the data's min and max.
  np.testing.assert_allclose(_histogram(_one(writer, 'edges', 3)),
                             [[0.5, 1, 1], [1, 2, 2], [2, 9, 1]])
  raw = {v.tag: v.histo for e in _raw_events(writer)[1:]
         for v in e.summary.value}
  flat = values.astype(np.float64).reshape(-1)
  normal = raw['normal']
  assert (normal.min, normal.max, normal.num) == (flat.min(), flat.max(),
                                                  1000)
  np.testing.assert_allclose(normal.sum, flat.sum())
  np.testing.assert_allclose(normal.sum_squares, (flat**2).sum())
  counts, edges = np.histogram(flat, bins=30)
  np.testing.assert_allclose(normal.bucket_limit, edges[1:])
  np.testing.assert_array_equal(normal.bucket, counts)
  assert raw['empty'].num == 0 and sum(raw['empty'].bucket) == 0


def test_text(writer):
  writer.text('text_test', 'hello world.', 1)
  writer.text('notes', '# Run 1\nlr = **0.1** — ünïcode', 2)
  writer.text('raw', b'bytes too', 3)
  value = _one(writer, 'text_test')
  assert _plugin(value) == 'text'
  text = tensor_util.make_ndarray(value.tensor)
  assert text.shape == () and text.item().decode('utf-8') == 'hello world.'
  notes = tensor_util.make_ndarray(_one(writer, 'notes', 2).tensor).item()
  assert notes.decode('utf-8') == '# Run 1\nlr = **0.1** — ünïcode'
  assert tensor_util.make_ndarray(
      _one(writer, 'raw', 3).tensor).item() == b'bytes too'


def test_write_tensors_and_metadata(writer):
  metadata = summary_pb2.SummaryMetadata(
      plugin_data=summary_pb2.SummaryMetadata.PluginData(
          plugin_name='custom', content=b'\x01\x02'))
  arrays = {
      'f32': np.arange(6, dtype=np.float32).reshape(2, 3),
      'f64': np.array(2.5),
      'i64': np.array([-1, 2**40], np.int64),
      'u8': np.array([[1], [255]], np.uint8),
      'u32': np.array([2**31 + 1], np.uint32),
      'bool': np.array([True, False]),
      'f16': np.array([0.5, -2], np.float16),
      'c64': np.array([1 + 2j], np.complex64),
      'big_endian': np.array([1, 2], '>i4'),
      'strided': np.arange(12, dtype=np.int16).reshape(3, 4)[:, ::2],
  }
  for tag, array in arrays.items():
    writer.write(tag, array, 1)
  writer.write('strings', np.array(['a', 'βc']), 1)
  writer.write('jax', jnp.ones((2, 2), jnp.int32), 1, metadata=metadata)
  writer.write('serialized', [1.0], 1, metadata=metadata.SerializeToString())
  for tag, array in arrays.items():
    got = tensor_util.make_ndarray(_one(writer, tag).tensor)
    assert got.shape == array.shape and got.dtype == array.dtype.newbyteorder(
        '=')
    np.testing.assert_array_equal(got, array)
  strings = tensor_util.make_ndarray(_one(writer, 'strings').tensor)
  assert [s.decode('utf-8') for s in strings] == ['a', 'βc']
  np.testing.assert_array_equal(
      tensor_util.make_ndarray(_one(writer, 'jax').tensor), np.ones((2, 2)))
  for tag in ('jax', 'serialized'):
    assert _one(writer, tag).metadata.plugin_data == metadata.plugin_data


def test_hparams(writer):
  hp_metadata = pytest.importorskip('tensorboard.plugins.hparams.metadata')
  writer.hparams({'learning_rate': np.float32(0.5), 'batch_size': 128,
                  'nesterov': True, 'optimizer': 'momentum',
                  'model': {'depth': jnp.int32(3), 'act': None}})
  value = _one(writer, '_hparams_/session_start_info', step=0)
  assert _plugin(value) == 'hparams'
  info = hp_metadata.parse_session_start_info_plugin_data(
      value.metadata.plugin_data.content)
  assert abs(info.start_time_secs - time.time()) < 60
  assert {name: v.WhichOneof('kind') for name, v in info.hparams.items()} == {
      'learning_rate': 'number_value', 'batch_size': 'number_value',
      'nesterov': 'bool_value', 'optimizer': 'string_value',
      'model.depth': 'number_value', 'model.act': 'string_value'}
  assert info.hparams['learning_rate'].number_value == 0.5
  assert info.hparams['batch_size'].number_value == 128
  assert info.hparams['nesterov'].bool_value
  assert info.hparams['optimizer'].string_value == 'momentum'
  assert info.hparams['model.depth'].number_value == 3
  assert info.hparams['model.act'].string_value == 'None'


def test_records_reach_the_os_at_once_and_flush_syncs(tmp_path, monkeypatch):
  synced = []
  monkeypatch.setattr(os, 'fsync', synced.append)
  writer = SummaryWriter(tmp_path)
  writer.scalar('a', 1., 1)
  size = os.path.getsize(writer.path)
  writer.scalar('a', 2., 2)
  assert os.path.getsize(writer.path) > size and not synced
  writer.flush()
  assert len(synced) == 1
  writer.close()


def test_flush_close_and_garbage_collection(tmp_path):
  with SummaryWriter(tmp_path) as writer:
    writer.scalar('a', 1., 1)
    writer.flush()
  writer.close()  # Safe to repeat.
  for call in (writer.flush, lambda: writer.scalar('a', 2., 2),
               lambda: writer.text('t', 'x', 2)):
    with pytest.raises(ValueError, match=r'SummaryWriter \(.*\) is closed; '
                       'create a new one'):
      call()
  with pytest.raises(AttributeError):  # As 2020 flax.
    writer.flush()
  assert len(_values(writer)['a']) == 1
  dropped = SummaryWriter(tmp_path)
  path = dropped.path
  dropped.scalar('b', 3., 1)
  del dropped
  gc.collect()
  loaded = list(efl.EventFileLoader(path).Load())
  assert [v.tag for e in loaded for v in e.summary.value] == ['b']


def test_two_writers_never_share_a_file(tmp_path):
  first, second = SummaryWriter(tmp_path), SummaryWriter(tmp_path)
  first.scalar('a', 1., 1)
  second.scalar('b', 2., 1)
  assert first.path != second.path
  assert list(_values(first)) == ['a'] and list(_values(second)) == ['b']
  first.close()
  second.close()


def test_errors(writer):
  with pytest.raises(ValueError, match=r"scalar 'loss'.*shape \(3,\)"):
    writer.scalar('loss', np.ones(3), 1)
  with pytest.raises(TypeError, match='step must be an integer scalar'):
    writer.scalar('loss', 1., 1.5)
  with pytest.raises(TypeError, match='tag must be a non-empty str'):
    writer.scalar('', 1., 1)
  with pytest.raises(ValueError, match=r"image 'im'.*\(2, 3, 5, 2\)"):
    writer.image('im', np.zeros((2, 3, 5, 2)), 1)
  with pytest.raises(ValueError, match=r"image 'im'.*got \(0, 4\)"):
    writer.image('im', np.zeros((0, 4)), 1)
  with pytest.raises(ValueError, match=r"audio 'au'.*got \(1, 2, 3, 4\)"):
    writer.audio('au', np.zeros((1, 2, 3, 4)), 1)
  with pytest.raises(ValueError, match='sample_rate must be a positive'):
    writer.audio('au', np.zeros(4), 1, sample_rate=0)
  with pytest.raises(ValueError, match=r"histogram 'h': 2 of 3 .*NaN or inf"):
    writer.histogram('h', [1., np.nan, np.inf], 1)
  with pytest.raises(ValueError, match=r"text 't'.*str or bytes, got int"):
    writer.text('t', 5, 1)
  with pytest.raises(TypeError, match=r"write 'w': unsupported dtype"):
    writer.write('w', np.array(['2020-01-01'], 'datetime64[D]'), 1)
  assert len(_raw_events(writer)) == 1  # Nothing invalid reached the file.


def _run(code):
  return subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, timeout=300,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def test_writes_without_tensorflow_tensorboard_or_matplotlib(tmp_path):
  result = _run(
      'import sys\n'
      'for name in ("tensorflow", "tensorboard", "matplotlib"):\n'
      '  sys.modules[name] = None  # Any import of them fails.\n'
      'from flaxish.metrics import SummaryWriter\n'
      f'w = SummaryWriter({os.fspath(tmp_path)!r})\n'
      'w.scalar("a", 1., 1)\n'
      'w.image("b", [[0.5]], 1)\n'
      'w.audio("c", [0.5], 1)\n'
      'w.hparams({"lr": 0.1})\n')
  assert result.returncode == 0, result.stderr
  (name,) = os.listdir(tmp_path)
  writer = type('W', (), {'path': os.fspath(tmp_path / name)})
  assert sorted(_values(writer)) == ['_hparams_/session_start_info', 'a', 'b',
                                     'c']


@pytest.mark.parametrize('missing', ['tensorboardX', 'PIL'])
def test_clear_import_error_only_when_a_writer_is_created(tmp_path, missing):
  result = _run(
      'import sys\n'
      f'sys.modules[{missing!r}] = None\n'
      'import flaxish, flaxish.metrics\n'
      'from flaxish.metrics import SummaryWriter, JsonlWriter\n'
      'try:\n'
      f'  SummaryWriter({os.fspath(tmp_path)!r})\n'
      'except ImportError as e:\n'
      '  print(e)\n')
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == (
      'SummaryWriter needs tensorboardX and Pillow: run '
      '`pip install flaxish[tensorboard]`.')
  assert not os.listdir(tmp_path)


def test_module_exports():
  assert tensorboard.__all__ == ['SummaryWriter']
  assert tensorboard.SummaryWriter is SummaryWriter


def test_threads_write_whole_records(writer):
  def log(thread):
    for step in range(25):
      writer.scalar(f'thread{thread}', thread * 100 + step, step)
  threads = [threading.Thread(target=log, args=(i,)) for i in range(4)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  values = _values(writer)
  for i in range(4):
    assert [(s, float(tensor_util.make_ndarray(v.tensor)))
            for s, v in values[f'thread{i}']] == [
                (s, i * 100 + s) for s in range(25)]
