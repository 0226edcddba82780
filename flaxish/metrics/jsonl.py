"""A JSON-lines metrics log, one object per line, flushed as it is written:
`{"step": 100, "split": "train", "time": 1700000000.0, "loss": 0.31}`."""
import json
import numbers
import os
import time
from typing import Any, Dict, List

import numpy as np

__all__ = ['JsonlWriter', 'read_jsonl']


def _to_json(name: str, value: Any) -> Any:
  """NumPy/JAX scalars as float, int or bool; str, None and numbers kept."""
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
  """Appends metrics records to the JSON-lines file `path` (its directory is
  created if missing)."""

  def __init__(self, path):
    self.path = os.fspath(path)
    os.makedirs(os.path.dirname(self.path) or os.curdir, exist_ok=True)
    self._file = open(self.path, 'a', encoding='utf-8')

  def write(self, step: int, split: str = 'train', **metrics) -> Dict:
    """Appends and returns one record: the integer `step`, the `split`
    (default 'train'), 'time' (now) and `metrics` (name=value: numbers, NumPy
    or JAX scalars, str or None)."""
    if self._file.closed:
      raise ValueError(f'This JsonlWriter ({self.path}) is closed.')
    step_array = np.asarray(step)
    if step_array.shape != () or step_array.dtype.kind not in 'iu':
      raise TypeError(f'step must be an integer scalar, got {step!r}.')
    if not isinstance(split, str):
      raise TypeError(f'split must be a str, got {split!r}.')
    if 'time' in metrics:
      raise ValueError("'time' is a reserved key (step, split, time); give "
                       'the metric another name.')
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
  """The JSON objects of a JSON-lines file (blank lines skipped); a
  ValueError names a line that is not one."""
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
