"""A JSON-lines metrics log: one JSON object per line, appended as you go.

Each line looks like
`{"step": 100, "split": "train", "time": 1700000000.0, "loss": 0.31}`.
Lines are flushed as they are written, so the log can be read (and plotted)
while training runs and survives a crash.
"""
import json
import numbers
import os
import time
from typing import Any, Dict, List

import numpy as np

__all__ = ['JsonlWriter', 'read_jsonl']

_RESERVED = ('step', 'split', 'time')


def _to_json(name: str, value: Any) -> Any:
  """A metric as a JSON value: NumPy/JAX scalars become float (int and bool
  dtypes stay int and bool); str, None and Python numbers are kept."""
  if value is None or isinstance(value, (str, bool)):
    return value
  if isinstance(value, numbers.Number) and not hasattr(value, 'dtype'):
    if isinstance(value, numbers.Integral):
      return int(value)
    if isinstance(value, numbers.Real):
      return float(value)
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f'Metric {name!r} must be a scalar, got an array of '
                     f'shape {array.shape}; log its mean instead.')
  kind = array.dtype.kind
  if kind == 'b':
    return bool(array.reshape(()))
  if kind in 'iu':
    return int(array.reshape(()))
  if kind in 'cOSUMm':
    raise TypeError(f'Metric {name!r} must be a real number, str or None, '
                    f'got {value!r}.')
  return float(array.reshape(()).astype(np.float64))  # Incl. bfloat16.


class JsonlWriter:
  """Appends metrics records to a JSON-lines file.

  Arguments:
    path: the file (appended to; its directory is created if missing).
  """

  def __init__(self, path):
    self.path = os.fspath(path)
    directory = os.path.dirname(self.path)
    if directory:
      os.makedirs(directory, exist_ok=True)
    self._file = open(self.path, 'a', encoding='utf-8')

  def write(self, step: int, split: str = 'train', **metrics) -> Dict:
    """Appends one record and returns it.

    Arguments:
      step: the training step (an integer; NumPy/JAX integers are accepted).
      split: which data the metrics are on, e.g. 'train' (default) or 'test'.
      **metrics: name=value; values are numbers (Python, NumPy or JAX
        scalars), str or None. 'time' (now, seconds since the epoch) is added.
    """
    if self._file.closed:
      raise ValueError(f'This JsonlWriter ({self.path}) is closed.')
    step_array = np.asarray(step)
    if step_array.shape != () or step_array.dtype.kind not in 'iu':
      raise TypeError(f'step must be an integer scalar, got {step!r}.')
    if not isinstance(split, str):
      raise TypeError(f'split must be a str, got {split!r}.')
    if 'time' in metrics:
      raise ValueError(f"'time' is a reserved key ({', '.join(_RESERVED)}); "
                       'give the metric another name.')
    record = {'step': int(step_array), 'split': split, 'time': time.time()}
    for name, value in metrics.items():
      record[name] = _to_json(name, value)
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    return record

  def close(self):
    """Closes the file. Safe to repeat."""
    self._file.close()

  def __enter__(self) -> 'JsonlWriter':
    return self

  def __exit__(self, *exc_info):
    self.close()


def read_jsonl(path) -> List[Dict[str, Any]]:
  """Reads a JSON-lines file into a list of dicts (blank lines skipped).

  Raises:
    ValueError: naming the line, if a line is not a JSON object.
  """
  records = []
  with open(os.fspath(path), encoding='utf-8') as f:
    for number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{os.fspath(path)}, line {number}: not valid JSON '
                         f'({e.msg}): {line[:80]!r}') from e
      if not isinstance(record, dict):
        raise ValueError(f'{os.fspath(path)}, line {number}: expected a JSON '
                         f'object, got {type(record).__name__}.')
      records.append(record)
  return records
