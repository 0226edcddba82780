"""WAV encoding with the standard library's `wave` module."""
import io
import wave

import numpy as np

__all__ = ['encode_wav']


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
  """Encodes audio as a 16-bit PCM WAV file.

  Arguments:
    samples: float array of shape `(frames, channels)`, clipped to
      [-1, 1] (NaN is written as silence).
    sample_rate: frames per second, a positive int.
  Returns:
    The WAV file's bytes.
  """
  samples = np.asarray(samples, dtype=np.float64)
  if samples.ndim != 2 or samples.shape[1] < 1:
    raise ValueError('encode_wav needs samples of shape (frames, channels), '
                     f'got {samples.shape}.')
  samples = np.nan_to_num(np.clip(samples, -1.0, 1.0), nan=0.0)
  pcm = np.round(samples * 32767).astype('<i2')
  buffer = io.BytesIO()
  with wave.open(buffer, 'wb') as out:
    out.setnchannels(samples.shape[1])
    out.setsampwidth(2)
    out.setframerate(sample_rate)
    out.writeframes(pcm.tobytes())  # C order: frames interleave channels.
  return buffer.getvalue()
