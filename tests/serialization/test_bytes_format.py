"""Tests for to_bytes / from_bytes."""
import collections
from typing import Any

import jax
import numpy as np
import pytest

from flaxish import serialization, struct
from flaxish.serialization.checkpoint_file import write_checkpoint
from tests.serialization._wire_reference import reference_pack

Moments = collections.namedtuple('Moments', ['mean', 'var'])


@struct.dataclass
class State:
  step: Any
  params: Any
  moments: Any
  history: Any
  tag: str = struct.field(pytree_node=False, default='static')


def _state(seed):
  rng = np.random.default_rng(seed)
  return State(step=np.int32(seed),
               params={'dense': {'kernel': rng.standard_normal((3, 4)),
                                 'bias': rng.standard_normal(4)}},
               moments=Moments(rng.standard_normal(2), rng.standard_normal(2)),
               history=[(rng.integers(9), [rng.standard_normal(1)]), 2.5])


def test_round_trip():
  target, saved = _state(0), _state(1)
  data = serialization.to_bytes(saved)
  assert data == reference_pack(serialization.to_state_dict(saved))
  restored = serialization.from_bytes(target, data)
  assert isinstance(restored, State) and isinstance(restored.moments, Moments)
  assert isinstance(restored.history[0], tuple)
  got, want = (jax.tree_util.tree_leaves(x) for x in (restored, saved))
  assert len(got) == len(want) == 8
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)
  assert restored.history[1] == 2.5 and int(restored.step) == 1


def test_reads_checkpoint_file_bytes(tmp_path):
  path = tmp_path / 'f'
  with open(path, 'wb') as f:
    write_checkpoint(f, serialization.to_state_dict(_state(2)))
  data = path.read_bytes()
  assert int(serialization.from_bytes(_state(0), data).step) == 2
  damaged = bytearray(data)
  damaged[40] ^= 1
  with pytest.raises(serialization.CorruptCheckpointError, match='<bytes>'):
    serialization.from_bytes(_state(0), bytes(damaged))


def test_strict_and_not_strict():
  data = serialization.to_bytes({'a': np.ones(2), 'b': np.ones(3)})
  with pytest.raises(serialization.RestoreError,
                     match=r'/a: shape \(2,\) in the file, \(4,\)'):
    serialization.from_bytes({'a': np.zeros(4), 'b': np.zeros(3)}, data)
  restored, skipped = serialization.from_bytes(
      {'a': np.zeros(4), 'b': np.zeros(3)}, data, strict=False)
  np.testing.assert_array_equal(restored['a'], np.zeros(4))
  np.testing.assert_array_equal(restored['b'], np.ones(3))
  assert [p.path for p in skipped] == ['/a']
  raw = serialization.from_bytes(None, data)
  assert set(raw) == {'a', 'b'}


def test_malformed_bytes():
  with pytest.raises(serialization.MalformedDataError):
    serialization.from_bytes({'a': 1}, b'\x81\xa1a')
