"""Tests for strict restore: every problem reported at once (matching.py)."""
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from flaxish import serialization
from flaxish.serialization.matching import RestoreError, match_state


def _target():
  return {'params': {'Dense_0': {'kernel': np.zeros((3, 5), np.float32),
                                 'bias': np.zeros(5, np.float32)},
                     'Dense_1': {'kernel': np.zeros((5, 2), np.float32)}},
          'step': 0}


def _file():
  return {'params': {'Dense_0': {'kernel': np.ones((3, 4), np.float32),
                                 'bias': np.ones(5, ml_dtypes.bfloat16)},
                     'Dense_9': {'kernel': np.ones((5, 2), np.float32)}},
          'step': np.int32(7)}


def test_one_error_lists_every_problem():
  with pytest.raises(RestoreError) as info:
    serialization.from_state_dict(_target(), _file())
  error = info.value
  assert isinstance(error, ValueError)
  lines = str(error).splitlines()
  assert lines[0] == ('the state does not match the target (1 missing, '
                      '1 unexpected, 2 mismatched):')
  assert lines[1:5] == [
      '  /params/Dense_0/kernel: shape (3, 4) in the file, (3, 5) in the '
      'target',
      '  /params/Dense_0/bias: dtype bfloat16 in the file, float32 in the '
      'target',
      '  /params/Dense_1: missing in the file (the target has a subtree of 1 '
      'leaf)',
      '  /params/Dense_9: in the file but not in the target (a subtree of 1 '
      'leaf)',
  ]
  assert 'strict=False' in lines[-1]
  assert [(p.path, p.kind) for p in error.problems] == [
      ('/params/Dense_0/kernel', 'mismatch'),
      ('/params/Dense_0/bias', 'mismatch'),
      ('/params/Dense_1', 'missing'), ('/params/Dense_9', 'unexpected')]


def test_not_strict_restores_what_matches():
  target = _target()
  file_state = _file()
  restored, skipped = serialization.from_state_dict(target, file_state,
                                                    strict=False)
  # Mismatched and missing entries keep the target's values.
  assert restored['params']['Dense_0']['kernel'] is (
      target['params']['Dense_0']['kernel'])
  assert restored['params']['Dense_1'] == target['params']['Dense_1']
  assert 'Dense_9' not in restored['params']
  assert restored['step'] == 7  # a Python int target takes a 0-d array
  kinds = {p.path: p.kind for p in skipped}
  assert kinds == {'/params/Dense_0/kernel': 'mismatch',
                   '/params/Dense_0/bias': 'mismatch',
                   '/params/Dense_1': 'missing',
                   '/params/Dense_9': 'unexpected'}
  unexpected = [p for p in skipped if p.kind == 'unexpected'][0]
  np.testing.assert_array_equal(unexpected.value['kernel'], np.ones((5, 2)))
  assert str(unexpected).startswith('/params/Dense_9: in the file')


def test_leaf_against_subtree_and_root_paths():
  problems, _ = match_state({'a': {'b': 1}}, {'a': np.ones(2)})
  assert [str(p) for p in problems] == [
      '/a: float64[2] in the file, a subtree of 1 leaf in the target']
  problems, _ = match_state(np.zeros(3), np.zeros(4))
  assert [str(p) for p in problems] == [
      '/: shape (4,) in the file, (3,) in the target']


def test_python_numbers_are_lenient_arrays_are_not():
  assert match_state({'a': 1}, {'a': 2.5})[0] == []
  assert match_state({'a': 1.0}, {'a': np.float32(2)})[0] == []
  assert match_state({'a': np.zeros(())}, {'a': 3})[0] == []
  problems, _ = match_state({'a': 1.0}, {'a': np.ones(2)})
  assert 'float64[2] in the file, the float 1.0 in the target' in str(
      problems[0])
  problems, _ = match_state({'a': np.zeros(2, np.int32)},
                            {'a': np.zeros(2, np.int64)})
  assert str(problems[0]) == ('/a: dtype int64 in the file, int32 in the '
                              'target')


def test_strings_and_none_match_their_type():
  problems, merged = match_state({'name': 'Pair', 'n': None},
                                 {'name': 'Other', 'n': None})
  assert problems == [] and merged == {'name': 'Other', 'n': None}
  problems, _ = match_state({'x': None, 'y': b'a'}, {'x': 'a', 'y': 'b'})
  assert [str(p) for p in problems] == [
      "/x: the str 'a' in the file, None in the target",
      "/y: the str 'b' in the file, the bytes b'a' in the target"]


def test_keys_with_slashes_are_quoted():
  problems, _ = match_state({'/Dense_0': {'mean': np.zeros(2)}},
                            {'/Dense_0': {'mean': np.zeros(3)}})
  assert problems[0].path == "/'/Dense_0'/mean"


def test_abstract_targets():
  target = {'w': jax.ShapeDtypeStruct((2, 3), jnp.float32)}
  restored = serialization.from_state_dict(
      target, {'w': np.ones((2, 3), np.float32)})
  np.testing.assert_array_equal(restored['w'], np.ones((2, 3)))
  with pytest.raises(RestoreError, match=r'/w: dtype float16 in the file'):
    serialization.from_state_dict(target, {'w': np.ones((2, 3), np.float16)})


def test_typed_prng_keys_round_trip():
  keys = jax.random.split(jax.random.key(3), 4)
  state = serialization.msgpack_restore(serialization.to_bytes({'k': keys}))
  assert state['k'].dtype == np.uint32 and state['k'].shape == (4, 2)
  restored = serialization.from_state_dict({'k': jax.random.key(0)},
                                           state, strict=False)[1]
  assert restored[0].kind == 'mismatch'  # one key vs four
  restored = serialization.from_state_dict({'k': keys}, state)
  assert jax.dtypes.issubdtype(restored['k'].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(restored['k']),
                                jax.random.key_data(keys))
