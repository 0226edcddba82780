"""`SummaryWriter`: the 2020 `flax.metrics.tensorboard` API without TensorFlow,
on `tensorboardX` (events), Pillow (PNG) and `wave` (WAV); install them with
`pip install flaxish[tensorboard]`."""
import functools
import importlib
import io
import itertools
import os
import socket
import threading
import time
import wave
import weakref
from typing import Any, Dict

import numpy as np

from flaxish import traverse_util

__all__ = ['SummaryWriter']

# numpy dtype name -> TensorFlow DataType number (tensorboard types.proto).
_DTYPES = {'float32': 1, 'float64': 2, 'int32': 3, 'uint8': 4, 'int16': 5,
           'int8': 6, 'complex64': 8, 'int64': 9, 'bool': 10, 'bfloat16': 14,
           'uint16': 17, 'complex128': 18, 'float16': 19, 'uint32': 22,
           'uint64': 23}
_FILE_IDS = itertools.count()  # Two writers never share a file.


@functools.cache
def _tbx():
  """tensorboardX, with the modules used here, and Pillow, on first use."""
  try:
    for name in ('record_writer', 'proto.event_pb2', 'proto.summary_pb2',
                 'proto.plugin_hparams_pb2'):
      importlib.import_module('tensorboardX.' + name)
    importlib.import_module('PIL.Image')
  except ImportError as e:
    raise ImportError('SummaryWriter needs tensorboardX and Pillow: run '
                      '`pip install flaxish[tensorboard]`.') from e
  return importlib.import_module('tensorboardX')


class _ClosedError(ValueError, AttributeError):
  """A write or flush on a closed writer (AttributeError as in 2020 flax)."""


def _pixels(image: np.ndarray) -> np.ndarray:
  """uint8 pixels: bools as 0 or 255, integers clipped to [0, 255], floats
  clipped to [0, 1] and scaled as tf.image.convert_image_dtype."""
  if image.dtype == bool:
    return image.astype(np.uint8) * np.uint8(255)
  if image.dtype.kind in 'iu':
    return np.clip(image, 0, 255).astype(np.uint8)
  scaled = np.nan_to_num(np.asarray(image, np.float64)) * 255.5
  return np.clip(scaled, 0, 255).astype(np.uint8)


def _png(pixels: np.ndarray) -> bytes:
  from PIL import Image
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, 'PNG')
  return buffer.getvalue()


def _wav(clip: np.ndarray, rate: int) -> bytes:
  """16-bit PCM of `(frames, channels)` in [-1, 1], as tf.audio.encode_wav."""
  buffer = io.BytesIO()
  with wave.open(buffer, 'wb') as out:
    out.setparams((clip.shape[1], 2, rate, 0, 'NONE', None))
    pcm = np.clip(np.round(clip * 32768), -32768, 32767).astype('<i2')
    out.writeframes(pcm.tobytes())
  return buffer.getvalue()


def _tensor(tensor: Any, tag: str) -> dict:
  """A `TensorProto`, as a dict, of a numeric, bool, str or bytes array."""
  array = np.asarray(tensor)
  proto = {'tensor_shape': {'dim': [{'size': n} for n in array.shape]}}
  if array.dtype.kind in 'USO':
    return dict(proto, dtype=7, string_val=[  # DT_STRING
        s.encode() if isinstance(s, str) else s for s in array.ravel()])
  if array.dtype.name not in _DTYPES:
    raise TypeError(f'write {tag!r}: unsupported dtype {array.dtype}; use '
                    f'one of {sorted(_DTYPES)}, str or bytes.')
  content = np.ascontiguousarray(array, array.dtype.newbyteorder('<'))
  return dict(proto, dtype=_DTYPES[array.dtype.name],
              tensor_content=content.tobytes())


def _unbuffered_record_writer(path: str):
  """tensorboardX's RecordWriter (TFRecord framing and CRCs) on an unbuffered
  file: each record reaches the OS when written; `flush()` fsyncs."""

  class Unbuffered(_tbx().record_writer.RecordWriter):

    def __init__(self, path):
      # pylint: disable=consider-using-with
      super().__init__(path)
      self._writer.close()
      self._writer = open(path, 'ab', buffering=0)

  return Unbuffered(path)


class SummaryWriter:
  """Writes summaries to a new file in `log_dir` (created if missing),
  `events.out.tfevents.<unix time>.<hostname>.<pid>.<n>`; readers see each
  record at once, `flush()` syncs the file to disk. ImportError if
  tensorboardX or Pillow is not installed."""

  def __init__(self, log_dir):
    self.log_dir = os.fspath(log_dir)
    os.makedirs(self.log_dir, exist_ok=True)
    self.path = os.path.join(self.log_dir, 'events.out.tfevents.'
                             f'{int(time.time()):010d}.{socket.gethostname()}'
                             f'.{os.getpid()}.{next(_FILE_IDS)}')
    self._writer = _unbuffered_record_writer(self.path)
    self._lock = threading.Lock()  # One record at a time from any thread.
    self._finalizer = weakref.finalize(self, self._writer.close)
    self._event(file_version='brain.Event:2')

  def _check_open(self):
    if not self._finalizer.alive:
      raise _ClosedError(f'This SummaryWriter ({self.path}) is closed; '
                         'create a new one to write more.')

  def _event(self, **fields):
    self._check_open()
    event = _tbx().proto.event_pb2.Event(wall_time=time.time(), **fields)
    with self._lock:
      self._writer.write(event.SerializeToString())

  def _write(self, tag: str, step: Any, values: list):
    if not isinstance(tag, str) or not tag:
      raise TypeError(f'A summary tag must be a non-empty str, got {tag!r}.')
    if np.ndim(step) or np.asarray(step).dtype.kind not in 'iu':
      raise TypeError(f'step must be an integer scalar, got {step!r}.')
    self._event(step=int(step), summary={'value': values})

  def scalar(self, tag: str, value: Any, step: int):
    """Logs a number (or a one-element array), stored as float32."""
    array = np.asarray(value, np.float64)
    if array.size != 1:
      raise ValueError(f'scalar {tag!r}: expected one number, got shape '
                       f'{array.shape}; log its mean or use histogram().')
    self._write(tag, step, [{'tag': tag, 'simple_value': array.item()}])

  def image(self, tag: str, image: Any, step: int, max_outputs: int = 3):
    """Logs a PNG of `(H, W)` or `(H, W, C)`, C in (1, 3, 4), grey stored as
    RGB; uint8, or floats in [0, 1]. A batch `(K, H, W)` or `(K, H, W, C)`
    logs its first `max_outputs` (default 3) as `tag/image/0`, ..."""
    image = np.asarray(image)
    batch = image.ndim == 4 or (image.ndim == 3 and
                                image.shape[-1] not in (1, 3, 4))
    images = image[:max(int(max_outputs), 0)] if batch else image[None]
    images = images[..., None] if images.ndim == 3 else images
    if (images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or
        0 in images.shape[1:3]):
      raise ValueError(f'image {tag!r}: expected shape (H, W), (H, W, C), '
                       '(K, H, W) or (K, H, W, C) with C in (1, 3, 4) and H, '
                       f'W >= 1, got {image.shape}.')
    pixels = _pixels(images)
    pixels = np.repeat(pixels, 3, -1) if pixels.shape[-1] == 1 else pixels
    self._write(tag, step, [{
        'tag': f'{tag}/image/{i}' if batch else tag,
        'image': {'height': one.shape[0], 'width': one.shape[1],
                  'colorspace': one.shape[2], 'encoded_image_string': _png(one)}
    } for i, one in enumerate(pixels)])

  def audio(self, tag: str, audiodata: Any, step: int,
            sample_rate: int = 44100, max_outputs: int = 3):
    """Logs 16-bit WAV clips, `(K, frames, channels)` (as 2020 flax),
    `(K, frames)` mono or one mono clip `(frames,)`, clipped to [-1, 1], at
    `sample_rate` (default 44100) frames per second. A batch logs its first
    `max_outputs` (default 3) clips as `tag/audio/0`, `tag/audio/1`, ..."""
    audio = np.asarray(audiodata, np.float64)
    batch = audio.ndim > 1
    clips = audio[:max(int(max_outputs), 0)] if batch else audio[None]
    clips = clips[..., None] if clips.ndim == 2 else clips
    if clips.ndim != 3 or not clips.shape[-1]:
      raise ValueError(f'audio {tag!r}: expected shape (frames,), (K, '
                       f'frames) or (K, frames, channels), got {audio.shape}.')
    rate = round(float(sample_rate))
    if rate < 1:
      raise ValueError(f'audio {tag!r}: sample_rate must be a positive '
                       f'number, got {sample_rate!r}.')
    self._write(tag, step, [{
        'tag': f'{tag}/audio/{i}' if batch else tag,
        'audio': {'sample_rate': rate, 'num_channels': clip.shape[1],
                  'length_frames': clip.shape[0], 'content_type': 'audio/wav',
                  'encoded_audio_string': _wav(clip, rate)}
    } for i, clip in enumerate(np.nan_to_num(np.clip(clips, -1, 1)))])

  def histogram(self, tag: str, values: Any, step: int, bins: Any = None):
    """Logs a histogram of the flattened real `values` (no NaN or inf);
    `bins` as in `numpy.histogram`: a number of equal-width bins over
    [min, max] (default None: 30) or the increasing bin edges."""
    data = np.asarray(values, np.float64).reshape(-1)
    if not np.isfinite(data).all():
      raise ValueError(f'histogram {tag!r}: {np.sum(~np.isfinite(data))} of '
                       f'{data.size} values are NaN or inf.')
    counts, edges = np.histogram(data, bins=30 if bins is None else bins)
    lo, hi = (data.min(), data.max()) if data.size else (0., 0.)
    self._write(tag, step, [{'tag': tag, 'histo': {
        'min': lo, 'max': hi, 'num': data.size, 'sum': data.sum(),
        'sum_squares': data @ data, 'bucket_limit': edges[1:].tolist(),
        'bucket': counts.tolist()}}])

  def text(self, tag: str, textdata: Any, step: int):
    """Logs a str (or UTF-8 bytes); TensorBoard renders it as markdown."""
    if not isinstance(textdata, (str, bytes)):
      raise ValueError(f'text {tag!r}: textdata must be a str or bytes, got '
                       f'{type(textdata).__name__}.')
    metadata = _tbx().proto.summary_pb2.SummaryMetadata(
        plugin_data={'plugin_name': 'text'})
    self.write(tag, np.array(textdata, dtype=object), step, metadata)

  def write(self, tag: str, tensor: Any, step: int, metadata: Any = None):
    """Logs a tensor (numeric, bool, str or bytes), e.g. for a custom plugin;
    `metadata` is None, a `SummaryMetadata` protocol buffer or its bytes."""
    value = {'tag': tag, 'tensor': _tensor(tensor, tag)}
    if hasattr(metadata, 'SerializeToString'):
      metadata = metadata.SerializeToString()
    if metadata is not None:
      value['metadata'] = _tbx().proto.summary_pb2.SummaryMetadata.FromString(
          bytes(metadata))
    self._write(tag, step, [value])

  def hparams(self, hparams: Dict[str, Any]):
    """Logs hyper-parameters for TensorBoard's HParams dashboard: name ->
    value, nested dicts flattened with '.', values other than bool, int,
    float and str written as `str(value)`."""
    content = _tbx().proto.plugin_hparams_pb2.HParamsPluginData(
        session_start_info={'start_time_secs': time.time()})
    for name, value in traverse_util.flatten_dict(hparams, sep='.').items():
      if hasattr(value, 'dtype') and np.ndim(value) == 0:
        value = np.asarray(value).item()  # NumPy and JAX scalars.
      entry = content.session_start_info.hparams[name]
      if isinstance(value, bool):
        entry.bool_value = value
      elif isinstance(value, (int, float)):
        entry.number_value = value
      else:
        entry.string_value = str(value)
    metadata = _tbx().proto.summary_pb2.SummaryMetadata(plugin_data={
        'plugin_name': 'hparams', 'content': content.SerializeToString()})
    self.write('_hparams_/session_start_info', np.zeros(0, np.float32), 0,
               metadata)

  def flush(self):
    """Syncs the file to disk; raises once closed."""
    self._check_open()
    self._writer.flush()

  def close(self):
    """Closes the file; later writes and `flush()` raise. Safe to repeat."""
    self._finalizer()

  def __enter__(self) -> 'SummaryWriter':
    return self

  def __exit__(self, *exc_info):
    self.close()
