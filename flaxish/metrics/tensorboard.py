"""`SummaryWriter`: TensorBoard event files, written without TensorFlow.

The 2020 `flax.metrics.tensorboard.SummaryWriter` API (0.2.2 signatures),
with the `Event`/`Summary` protocol buffers encoded by hand and framed as
TFRecords, so neither TensorFlow nor the tensorboard package is needed to
write logs (only to view them).

Usage (only process 0 should create a writer in multi-process training; each
writer writes its own file):

    if jax.process_index() == 0:
      with SummaryWriter('/tmp/logs/run1') as writer:
        writer.hparams({'learning_rate': 0.1, 'batch_size': 128})
        writer.scalar('train_loss', loss, step)
"""
import os
import socket
import threading
import time
import weakref
from typing import Any, Mapping

from flaxish.metrics import _summary
from flaxish.metrics import _tfrecord

__all__ = ['SummaryWriter']


class _EventFile:
  """An open event file with a queue of framed records (kept apart from the
  writer so `weakref.finalize` can flush it when the writer is dropped)."""

  def __init__(self, log_dir: str, max_queue: int, flush_secs: float):
    base = 'events.out.tfevents.%010d.%s' % (time.time(),
                                             socket.gethostname())
    self.path = os.path.join(log_dir, base)
    attempt = 0
    while True:  # Never append to another writer's file.
      try:
        self._file = open(self.path, 'xb')
        break
      except FileExistsError:
        attempt += 1
        self.path = os.path.join(log_dir,
                                 f'{base}.{os.getpid()}.{attempt}')
    self._queue = []
    self._max_queue = max_queue
    self._flush_secs = flush_secs
    self._last_flush = time.monotonic()
    self._lock = threading.Lock()
    self.closed = False

  def append(self, record: bytes):
    with self._lock:
      self._queue.append(_tfrecord.frame_record(record))
      due = time.monotonic() - self._last_flush >= self._flush_secs
      if len(self._queue) >= self._max_queue or due:
        self._flush_locked()

  def _flush_locked(self):
    if self._queue:
      self._file.write(b''.join(self._queue))
      self._queue.clear()
    self._file.flush()
    self._last_flush = time.monotonic()

  def flush(self):
    with self._lock:
      if not self.closed:
        self._flush_locked()

  def close(self):
    with self._lock:
      if not self.closed:
        self._flush_locked()
        self._file.close()
        self.closed = True


class SummaryWriter:
  """Writes scalars, images, audio, histograms, text, tensors and
  hyper-parameters to a TensorBoard event file in `log_dir`.

  Records are queued in memory and written when `max_queue` are pending,
  when `flush_secs` have passed at the time of a write, on `flush()`, on
  `close()`, and when the writer is garbage collected or the interpreter
  exits. Use it as a context manager to close it.

  Arguments:
    log_dir: the directory (created if missing); the file is named
      `events.out.tfevents.<unix time>.<hostname>` (with `.<pid>.<n>`
      appended if that name is taken).
    max_queue: records kept in memory before a write (default 10).
    flush_secs: seconds between writes at most, checked on each record
      (default 120).
  """

  def __init__(self, log_dir, *, max_queue: int = 10,
               flush_secs: float = 120.):
    self.log_dir = os.fspath(log_dir)
    os.makedirs(self.log_dir, exist_ok=True)
    self._file = _EventFile(self.log_dir, max(int(max_queue), 1),
                            float(flush_secs))
    self._finalizer = weakref.finalize(self, self._file.close)
    self._file.append(_summary.event(0, file_version=_summary.FILE_VERSION))
    self._file.flush()

  @property
  def path(self) -> str:
    """The path of the event file."""
    return self._file.path

  def _write(self, step: Any, values):
    if self._file.closed:
      raise ValueError(f'This SummaryWriter ({self.path}) is closed; create '
                       'a new one to write more.')
    step = _summary.as_step(step)
    self._file.append(_summary.event(step, _summary.summary(values)))

  def scalar(self, tag: str, value: Any, step: int):
    """Logs a number (int, float, or a one-element NumPy/JAX array),
    stored as float32."""
    self._write(step, [_summary.scalar_value(tag, value)])

  def image(self, tag: str, image: Any, step: int, max_outputs: int = 3):
    """Logs an image or a batch of images as PNG.

    Arguments:
      tag: the name; a batch's images are `tag/image/0`, `tag/image/1`, ...
      image: `(H, W)`, `(H, W, C)`, or a batch `(K, H, W)` / `(K, H, W, C)`,
        C in (1, 3, 4); uint8, or floats in [0, 1] (clipped).
      step: the training step.
      max_outputs: at most this many images of a batch (default 3).
    """
    self._write(step, _summary.image_values(tag, image, max_outputs))

  def audio(self, tag: str, audiodata: Any, step: int,
            sample_rate: int = 44100, max_outputs: int = 3):
    """Logs audio clips as 16-bit WAV.

    Arguments:
      tag: the name; a batch's clips are `tag/audio/0`, `tag/audio/1`, ...
      audiodata: `(K, frames, channels)` (as in 2020 flax), `(K, frames)`
        mono clips, or one mono clip `(frames,)`; floats clipped to [-1, 1].
      step: the training step.
      sample_rate: frames per second (default 44100).
      max_outputs: at most this many clips of a batch (default 3).
    """
    self._write(step, _summary.audio_values(tag, audiodata, sample_rate,
                                            max_outputs))

  def histogram(self, tag: str, values: Any, step: int, bins: Any = None):
    """Logs a histogram of the flattened `values` (no NaN or inf).

    Arguments:
      tag: the name.
      values: a real array of any shape.
      step: the training step.
      bins: a number of equal-width bins (default None: 30) or the bin edges,
        as in `numpy.histogram`.
    """
    self._write(step, [_summary.histogram_value(tag, values, bins)])

  def text(self, tag: str, textdata: Any, step: int):
    """Logs a str (or UTF-8 bytes); TensorBoard renders it as markdown."""
    self._write(step, [_summary.text_value(tag, textdata)])

  def write(self, tag: str, tensor: Any, step: int, metadata: Any = None):
    """Logs an arbitrary tensor, e.g. for a custom plugin.

    Arguments:
      tag: the name.
      tensor: an array of a numeric or bool dtype, or of strings.
      step: the training step.
      metadata: None, a `SummaryMetadata` protocol buffer, or its serialized
        bytes.
    """
    self._write(step, [_summary.tensor_value(tag, tensor, metadata)])

  def hparams(self, hparams: Mapping[str, Any]):
    """Logs hyper-parameters for TensorBoard's HParams dashboard.

    Arguments:
      hparams: name -> value; nested dicts are flattened with '.'; values
        other than bool, int, float and str are written as `str(value)`.
    """
    self._write(0, [_summary.hparams_value(hparams)])

  def flush(self):
    """Writes all queued records to the file."""
    self._file.flush()

  def close(self):
    """Flushes and closes the file; later writes raise. Safe to repeat."""
    self._finalizer()

  def __enter__(self) -> 'SummaryWriter':
    return self

  def __exit__(self, *exc_info):
    self.close()
