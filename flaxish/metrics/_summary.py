"""Builds TensorBoard `Event` and `Summary` protocol buffers as bytes.

Field numbers follow tensorboard/compat/proto (event.proto, summary.proto,
histogram.proto, tensor.proto, tensor_shape.proto, types.proto) and
tensorboard/plugins/hparams/plugin_data.proto. Scalars, images, histograms and
audio use the classic `Summary.Value` fields (simple_value, image, histo,
audio), which every TensorBoard reads; text, hparams and `write` use a
`TensorProto` with plugin metadata, as the TF2 summary ops do.

Every function validates its input and raises `TypeError`/`ValueError` naming
the tag, so a bad call fails where it is made, not inside the reader.
"""
import time
from typing import Any, List, Mapping, Optional

import numpy as np

from flaxish.metrics import _png
from flaxish.metrics import _protobuf as pb
from flaxish.metrics import _wav

__all__ = ['FILE_VERSION', 'HPARAMS_TAG', 'event', 'summary', 'scalar_value',
           'image_values', 'audio_values', 'histogram_value', 'text_value',
           'tensor_value', 'hparams_value', 'as_step']

FILE_VERSION = 'brain.Event:2'
HPARAMS_TAG = '_hparams_/session_start_info'
DEFAULT_HISTOGRAM_BINS = 30  # As tf.summary.histogram.

# numpy dtype name -> tensorflow DataType enum (types.proto).
_DATA_TYPES = {
    'float32': 1, 'float64': 2, 'int32': 3, 'uint8': 4, 'int16': 5,
    'int8': 6, 'complex64': 8, 'int64': 9, 'bool': 10, 'bfloat16': 14,
    'uint16': 17, 'complex128': 18, 'float16': 19, 'uint32': 22,
    'uint64': 23,
}
_DT_FLOAT, _DT_STRING = 1, 7
# Summary.Image.colorspace by channel count.
_COLORSPACES = {1: 1, 3: 3, 4: 4}


# ---------------------------------------------------------------- messages


def event(step: int, summary_bytes: Optional[bytes] = None,
          file_version: Optional[str] = None,
          wall_time: Optional[float] = None) -> bytes:
  """An `Event` holding a `Summary` (or, for the first record, the file
  version); `wall_time` defaults to now."""
  out = pb.double_field(1, time.time() if wall_time is None else wall_time)
  out += pb.int_field(2, step)
  if file_version is not None:
    out += pb.string_field(3, file_version)
  if summary_bytes is not None:
    out += pb.bytes_field(5, summary_bytes)
  return out


def summary(values: List[bytes]) -> bytes:
  """A `Summary` from encoded `Summary.Value`s."""
  return b''.join(pb.bytes_field(1, value) for value in values)


def _value(tag: str, content: bytes,
           metadata: Optional[bytes] = None) -> bytes:
  """A `Summary.Value`: tag, optional metadata, and `content`, the encoded
  field holding the data (simple_value, image, histo, audio or tensor)."""
  out = pb.string_field(1, tag)
  if metadata is not None:
    out += pb.bytes_field(9, metadata)
  return out + content


def _plugin_metadata(plugin_name: str, content: bytes = b'') -> bytes:
  plugin_data = pb.string_field(1, plugin_name)
  if content:
    plugin_data += pb.bytes_field(2, content)
  return pb.bytes_field(1, plugin_data)


def _tensor_shape(shape) -> bytes:
  return b''.join(pb.bytes_field(2, pb.int_field(1, size)) for size in shape)


# ---------------------------------------------------------------- checks


def _check_tag(tag: Any) -> str:
  if not isinstance(tag, str) or not tag:
    raise TypeError(f'A summary tag must be a non-empty str, got {tag!r}.')
  return tag


def as_step(step: Any) -> int:
  """`step` as a Python int; it must be an integer scalar (int, NumPy or JAX
  integer)."""
  array = np.asarray(step)
  if array.shape != () or array.dtype.kind not in 'iu':
    raise TypeError('step must be an integer scalar (int or a NumPy/JAX '
                    f'integer), got {step!r}.')
  return int(array)


def _as_float_array(data: Any, what: str, tag: str) -> np.ndarray:
  array = np.asarray(data)
  if array.dtype.kind in 'biuf':
    return array.astype(np.float64)
  if array.dtype.kind == 'c' or array.dtype.kind in 'OSUM':
    raise TypeError(f'{what} {tag!r}: expected real numbers, got an array '
                    f'of dtype {array.dtype}.')
  try:  # bfloat16 and other ml_dtypes floats.
    return array.astype(np.float64)
  except (TypeError, ValueError) as e:
    raise TypeError(f'{what} {tag!r}: cannot convert dtype {array.dtype} to '
                    'float.') from e


# ---------------------------------------------------------------- values


def scalar_value(tag: str, value: Any) -> bytes:
  """A `Summary.Value` with `simple_value` (stored as float32)."""
  tag = _check_tag(tag)
  array = _as_float_array(value, 'scalar', tag)
  if array.size != 1:
    raise ValueError(f'scalar {tag!r}: expected one number, got an array of '
                     f'shape {array.shape}; log its mean or use histogram().')
  return _value(tag, pb.float_field(2, array.reshape(())))


def _image_to_uint8(image: np.ndarray, tag: str) -> np.ndarray:
  if image.dtype == np.uint8:
    return image
  if image.dtype.kind == 'b':
    return image.astype(np.uint8) * 255
  if image.dtype.kind in 'iu':
    if image.size and (image.min() < 0 or image.max() > 255):
      raise ValueError(f'image {tag!r}: integer pixels must lie in [0, 255], '
                       f'got values in [{image.min()}, {image.max()}]; pass '
                       'uint8 or floats in [0, 1].')
    return image.astype(np.uint8)
  pixels = _as_float_array(image, 'image', tag)
  pixels = np.nan_to_num(np.clip(pixels, 0.0, 1.0), nan=0.0)
  return np.round(pixels * 255).astype(np.uint8)


def image_values(tag: str, image: Any, max_outputs: int = 3) -> List[bytes]:
  """`Summary.Value`s with PNG images.

  Arguments:
    tag: the name; a batch's images are named `tag/image/0`, `tag/image/1`...
    image: `(H, W)` or `(H, W, C)` for one image, `(K, H, W)` or
      `(K, H, W, C)` for a batch (a 3-d array whose last dim is 1, 3 or 4 is
      one `(H, W, C)` image); C is 1 (grey), 3 (RGB) or 4 (RGBA); uint8
      in [0, 255] or floats in [0, 1] (clipped).
    max_outputs: at most this many images of a batch are written (default 3).
  """
  tag = _check_tag(tag)
  image = np.asarray(image)
  shape = image.shape
  if image.ndim == 2:
    batch, image = False, image[None, :, :, None]
  elif image.ndim == 3 and shape[-1] in _COLORSPACES:
    batch, image = False, image[None]
  elif image.ndim == 3:
    batch, image = True, image[..., None]
  elif image.ndim == 4:
    batch = True
  else:
    batch = None
  if (batch is None or image.shape[-1] not in _COLORSPACES or
      image.shape[1] == 0 or image.shape[2] == 0):
    raise ValueError(f'image {tag!r}: expected shape (H, W), (H, W, C), '
                     '(K, H, W) or (K, H, W, C) with C in (1, 3, 4) and H, '
                     f'W >= 1, got {shape}.')
  if batch:
    image = image[:max(int(max_outputs), 0)]
  pixels = _image_to_uint8(image, tag)
  values = []
  for i, one in enumerate(pixels):
    height, width, channels = one.shape
    message = (pb.int_field(1, height) + pb.int_field(2, width) +
               pb.int_field(3, _COLORSPACES[channels]) +
               pb.bytes_field(4, _png.encode_png(one)))
    values.append(_value(f'{tag}/image/{i}' if batch else tag,
                         pb.bytes_field(4, message)))
  return values


def audio_values(tag: str, audiodata: Any, sample_rate: int = 44100,
                 max_outputs: int = 3) -> List[bytes]:
  """`Summary.Value`s with 16-bit PCM WAV clips.

  Arguments:
    tag: the name; a batch's clips are named `tag/audio/0`, `tag/audio/1`...
    audiodata: `(frames,)` for one mono clip, `(K, frames)` for a batch of
      mono clips, `(K, frames, channels)` for a batch; floats, clipped to
      [-1, 1].
    sample_rate: frames per second (default 44100).
    max_outputs: at most this many clips of a batch are written (default 3).
  """
  tag = _check_tag(tag)
  audio = _as_float_array(audiodata, 'audio', tag)
  shape = audio.shape
  if audio.ndim == 1:
    batch, audio = False, audio[None, :, None]
  elif audio.ndim == 2:
    batch, audio = True, audio[..., None]
  elif audio.ndim == 3:
    batch = True
  else:
    batch = None
  if batch is None or audio.shape[-1] < 1:
    raise ValueError(f'audio {tag!r}: expected shape (frames,), (K, frames) '
                     f'or (K, frames, channels), got {shape}.')
  rate = np.asarray(sample_rate)
  if rate.shape != () or rate.dtype.kind not in 'iuf' or not rate > 0:
    raise ValueError(f'audio {tag!r}: sample_rate must be a positive number, '
                     f'got {sample_rate!r}.')
  rate = int(round(float(rate)))
  values = []
  if batch:
    audio = audio[:max(int(max_outputs), 0)]
  for i, clip in enumerate(audio):
    frames, channels = clip.shape
    message = (pb.float_field(1, rate) + pb.int_field(2, channels) +
               pb.int_field(3, frames) +
               pb.bytes_field(4, _wav.encode_wav(clip, rate)) +
               pb.string_field(5, 'audio/wav'))
    values.append(_value(f'{tag}/audio/{i}' if batch else tag,
                         pb.bytes_field(6, message)))
  return values


def histogram_value(tag: str, values: Any, bins: Any = None) -> bytes:
  """A `Summary.Value` with a `HistogramProto` of the flattened `values`.

  Arguments:
    tag: the name.
    values: any real array; NaN or inf is an error.
    bins: as `numpy.histogram`: a number of equal-width bins over
      [min, max] (default None: 30, as tf.summary.histogram), or the bin
      edges as an increasing sequence (values outside them are not counted).
  """
  tag = _check_tag(tag)
  data = _as_float_array(values, 'histogram', tag).reshape(-1)
  finite = np.isfinite(data)
  if not finite.all():
    raise ValueError(f'histogram {tag!r}: {int((~finite).sum())} of '
                     f'{data.size} values are NaN or inf; filter them out '
                     '(e.g. values[np.isfinite(values)]) or log a scalar.')
  if bins is None:
    bins = DEFAULT_HISTOGRAM_BINS
  try:
    counts, edges = np.histogram(data, bins=bins)
  except (TypeError, ValueError) as e:
    raise ValueError(f'histogram {tag!r}: invalid bins={bins!r}: {e}') from e
  lo, hi = (float(data.min()), float(data.max())) if data.size else (0., 0.)
  message = (pb.double_field(1, lo) + pb.double_field(2, hi) +
             pb.double_field(3, data.size) +
             pb.double_field(4, data.sum()) +
             pb.double_field(5, np.dot(data, data)) +
             pb.packed_doubles_field(6, edges[1:]) +
             pb.packed_doubles_field(7, counts))
  return _value(tag, pb.bytes_field(5, message))


def text_value(tag: str, textdata: Any) -> bytes:
  """A `Summary.Value` with a string tensor for the text plugin (markdown)."""
  tag = _check_tag(tag)
  if not isinstance(textdata, (str, bytes)):
    raise TypeError(f'text {tag!r}: textdata must be a str or bytes, got '
                    f'{type(textdata).__name__}.')
  if isinstance(textdata, str):
    textdata = textdata.encode('utf-8')
  tensor = (pb.int_field(1, _DT_STRING) + pb.bytes_field(2, b'') +
            pb.bytes_field(8, textdata))
  return _value(tag, pb.bytes_field(8, tensor), _plugin_metadata('text'))


def _tensor_proto(tensor: Any, tag: str) -> bytes:
  array = np.asarray(tensor)
  shape = _tensor_shape(array.shape)
  if array.dtype.kind in 'USO':
    items = []
    for item in array.reshape(-1).tolist():
      if isinstance(item, str):
        item = item.encode('utf-8')
      if not isinstance(item, bytes):
        raise TypeError(f'write {tag!r}: an object array may hold only str '
                        f'or bytes, found {type(item).__name__}.')
      items.append(pb.bytes_field(8, item))
    return (pb.int_field(1, _DT_STRING) + pb.bytes_field(2, shape) +
            b''.join(items))
  dtype = _DATA_TYPES.get(array.dtype.name)
  if dtype is None:
    raise TypeError(f'write {tag!r}: unsupported dtype {array.dtype}; use '
                    f'one of {sorted(_DATA_TYPES)}, str or bytes.')
  if array.dtype.byteorder == '>':
    array = array.astype(array.dtype.newbyteorder('<'))
  content = np.ascontiguousarray(array).tobytes()
  return (pb.int_field(1, dtype) + pb.bytes_field(2, shape) +
          pb.bytes_field(4, content))


def tensor_value(tag: str, tensor: Any, metadata: Any = None) -> bytes:
  """A `Summary.Value` with a `TensorProto` of `tensor`.

  Arguments:
    tag: the name.
    tensor: an array (numeric or bool dtype, stored as `tensor_content`) or
      strings (stored as `string_val`).
    metadata: None, a `SummaryMetadata` protocol buffer (anything with
      `SerializeToString()`), or its serialized bytes.
  """
  tag = _check_tag(tag)
  if metadata is not None:
    if hasattr(metadata, 'SerializeToString'):
      metadata = metadata.SerializeToString()
    elif not isinstance(metadata, (bytes, bytearray)):
      raise TypeError(f'write {tag!r}: metadata must be None, a '
                      'SummaryMetadata proto or its serialized bytes, got '
                      f'{type(metadata).__name__}.')
    metadata = bytes(metadata)
  return _value(tag, pb.bytes_field(8, _tensor_proto(tensor, tag)), metadata)


def _flatten(mapping: Mapping[Any, Any], prefix: str = '') -> dict:
  flat = {}
  for key, value in mapping.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      flat.update(_flatten(value, name + '.'))
    else:
      flat[name] = value
  return flat


def _hparam(value: Any) -> bytes:
  """A `google.protobuf.Value`: bool, number or string (others as str)."""
  if hasattr(value, 'shape') and np.shape(value) == ():
    value = np.asarray(value).item()  # NumPy / JAX scalars.
  if isinstance(value, (bool, np.bool_)):
    return pb.int_field(4, bool(value))
  if isinstance(value, (int, float, np.integer, np.floating)):
    return pb.double_field(2, float(value))
  return pb.string_field(3, value if isinstance(value, str) else str(value))


def hparams_value(hparams: Mapping[str, Any],
                  start_time: Optional[float] = None) -> bytes:
  """The hparams plugin's `session_start_info` `Summary.Value`.

  Arguments:
    hparams: name -> value; nested dicts are flattened with '.' ('opt.lr');
      bool, int and float values are kept, anything else is written as str().
    start_time: the session start in seconds since the epoch (default now).
  """
  if not isinstance(hparams, Mapping):
    raise TypeError('hparams must be a mapping from name to value, got '
                    f'{type(hparams).__name__}.')
  flat = _flatten(hparams)
  entries = b''.join(
      pb.bytes_field(1, pb.string_field(1, name) +
                     pb.bytes_field(2, _hparam(flat[name])))
      for name in sorted(flat))
  start = pb.double_field(5, time.time() if start_time is None
                          else start_time)
  plugin_data = pb.int_field(1, 0) + pb.bytes_field(3, entries + start)
  null_tensor = pb.int_field(1, _DT_FLOAT) + pb.bytes_field(
      2, _tensor_shape((0,)))
  return _value(HPARAMS_TAG, pb.bytes_field(8, null_tensor),
                _plugin_metadata('hparams', plugin_data))
