"""Tests of flaxish.metrics.jsonl: JsonlWriter and read_jsonl."""
import json
import time

import jax.numpy as jnp
import numpy as np
import pytest

from flaxish.metrics import JsonlWriter, read_jsonl


def test_round_trip_with_numpy_and_jax_scalars(tmp_path):
  path = tmp_path / 'logs' / 'metrics.jsonl'  # The directory is created.
  before = time.time()
  with JsonlWriter(path) as writer:
    returned = writer.write(np.int64(10), loss=np.float32(0.25),
                            accuracy=jnp.asarray(0.75), lr=0.1, epoch=1)
    writer.write(jnp.int32(10), split='test', loss=jnp.asarray(0.5,
                                                               jnp.bfloat16),
                 accuracy=jnp.array([0.875]), correct=np.int32(7),
                 finished=np.bool_(True), note='ok', extra=None)
  records = read_jsonl(path)
  assert records[0] == returned
  assert [r['step'] for r in records] == [10, 10]
  assert [r['split'] for r in records] == ['train', 'test']
  assert all(before - 1 <= r['time'] <= time.time() + 1 for r in records)
  assert records[0]['loss'] == 0.25 and records[0]['accuracy'] == 0.75
  assert records[0]['lr'] == 0.1 and records[0]['epoch'] == 1
  assert records[1]['loss'] == 0.5 and records[1]['accuracy'] == 0.875
  assert records[1]['correct'] == 7 and records[1]['finished'] is True
  assert records[1]['note'] == 'ok' and records[1]['extra'] is None
  assert type(records[0]['loss']) is float
  assert type(records[1]['correct']) is int
  # One plain JSON object per line, in the documented key order.
  lines = path.read_text().splitlines()
  assert len(lines) == 2
  assert list(json.loads(lines[0]))[:3] == ['step', 'split', 'time']


def test_appends_and_flushes_each_line(tmp_path):
  path = tmp_path / 'm.jsonl'
  with JsonlWriter(path) as writer:
    writer.write(1, loss=1.0)
    assert len(read_jsonl(path)) == 1  # Readable while training runs.
  with JsonlWriter(path) as writer:
    writer.write(2, loss=0.5)
  assert [r['loss'] for r in read_jsonl(path)] == [1.0, 0.5]


def test_write_errors(tmp_path):
  writer = JsonlWriter(tmp_path / 'm.jsonl')
  with pytest.raises(ValueError, match=r"'loss' must be a scalar.*\(2,\)"):
    writer.write(1, loss=np.ones(2))
  with pytest.raises(TypeError, match="'z' must be a real number"):
    writer.write(1, z=1j)
  with pytest.raises(ValueError, match="'time' is a reserved key"):
    writer.write(1, time=3.0)
  with pytest.raises(TypeError, match='step must be an integer'):
    writer.write(1.5, loss=1.0)
  with pytest.raises(TypeError, match='split must be a str'):
    writer.write(1, split=None, loss=1.0)
  writer.close()
  writer.close()
  with pytest.raises(ValueError, match='closed'):
    writer.write(1, loss=1.0)
  assert read_jsonl(tmp_path / 'm.jsonl') == []


def test_read_errors_name_the_line(tmp_path):
  path = tmp_path / 'bad.jsonl'
  path.write_text('{"step": 1}\n\n[1, 2]\n')
  with pytest.raises(ValueError, match=r'line 3: expected a JSON object'):
    read_jsonl(path)
  path.write_text('{"step": 1}\n{"step": 2, "lo\n')
  with pytest.raises(ValueError, match=r'line 2: not valid JSON'):
    read_jsonl(path)
