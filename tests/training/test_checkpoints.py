"""Tests for flaxish.training.checkpoints: files, names, crashes, async."""
import collections
import errno
import json
import logging
import os
import re
import select
import signal
import struct as struct_lib
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest

from flaxish import jax_utils, nn, optim, serialization, struct
from flaxish.training import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

Moments = collections.namedtuple('Moments', ['mean', 'var'])


@struct.dataclass
class TrainState:
  step: Any
  params: Any
  moments: Any
  history: Any
  note: str = struct.field(pytree_node=False, default='static')


def _train_state(seed):
  rng = np.random.default_rng(seed)
  return TrainState(
      step=np.int64(seed),
      params={'dense': {'kernel': rng.standard_normal((3, 4), np.float32),
                        'bias': jnp.asarray(rng.standard_normal(4),
                                            jnp.bfloat16)}},
      moments=Moments(rng.standard_normal(2), rng.standard_normal(2)),
      history=[(rng.integers(100, size=3), [rng.standard_normal(1)]), 2.5])


def _assert_trees_equal(got, want):
  """Same paths, and leaves with the same dtype, shape and bits."""
  got_items = jax.tree_util.tree_flatten_with_path(got)[0]
  want_items = jax.tree_util.tree_flatten_with_path(want)[0]
  assert [jax.tree_util.keystr(p) for p, _ in got_items] == [
      jax.tree_util.keystr(p) for p, _ in want_items]
  for (_, g), (_, w) in zip(got_items, want_items):
    g, w = np.asarray(g), np.asarray(w)
    assert g.dtype == w.dtype and g.shape == w.shape
    assert g.tobytes() == w.tobytes()


def _names(ckpt_dir):
  """The data files; each must have its sidecar."""
  names = sorted(os.listdir(ckpt_dir))
  data = [n for n in names if not n.endswith('.meta')]
  for name in data:
    if re.fullmatch(r'checkpoint_(0|-?[1-9][0-9]*)', name):
      assert name + '.meta' in names, names
  return data


def unpack_2020(data):
  """The 2020 flax reader: msgpack.unpackb with its extension hook."""
  def ext_hook(code, payload):
    if code == 1:
      shape, dtype, buffer = msgpack.unpackb(payload, raw=True)
      return np.frombuffer(buffer, dtype=dtype).reshape(shape)
    return msgpack.ExtType(code, payload)
  return msgpack.unpackb(data, ext_hook=ext_hook, raw=False)


def pack_2020(tree):
  """The 2020 flax writer: msgpack.packb with its extension hook."""
  def default(x):
    if isinstance(x, np.ndarray):
      return msgpack.ExtType(1, msgpack.packb(
          (x.shape, x.dtype.str, x.tobytes('C')), use_bin_type=True))
    raise TypeError(type(x))
  return msgpack.packb(tree, default=default, strict_types=True)


# Round trips.


def test_round_trip_struct_namedtuple_lists_tuples(tmp_path):
  saved = _train_state(1)
  path = checkpoints.save_checkpoint(tmp_path, saved, step=1)
  assert path == os.path.join(tmp_path, 'checkpoint_1')
  restored = checkpoints.restore_checkpoint(tmp_path, _train_state(0))
  assert isinstance(restored.moments, Moments)
  assert isinstance(restored.history[0], tuple)
  assert restored.note == 'static'
  _assert_trees_equal(restored, saved)


@pytest.mark.parametrize('dtype', [
    np.bool_, np.int8, np.uint16, np.int32, np.uint64, np.float16,
    np.float32, np.float64, np.complex64, np.complex128, jnp.bfloat16,
    jnp.float8_e4m3fn, jnp.float8_e5m2, jnp.int4],
                         ids=lambda d: np.dtype(d).name)
def test_round_trip_dtypes(tmp_path, dtype):
  raw = np.random.default_rng(0).integers(
      0, 256, 24 * np.dtype(dtype).itemsize, dtype=np.uint8)
  if dtype == np.bool_:
    raw &= 1
  arr = raw.view(dtype).reshape(4, 6)
  tree = {'numpy': arr, 'scalar': arr[0, 0]}
  if np.dtype(dtype).itemsize < 8:  # without x64, JAX has no 64-bit types
    tree['jax'] = jnp.asarray(arr)
  checkpoints.save_checkpoint(tmp_path, tree, 0)
  target = jax.tree_util.tree_map(np.zeros_like, tree)
  _assert_trees_equal(checkpoints.restore_checkpoint(tmp_path, target),
                      tree)


class Net(nn.Module):

  def apply(self, x, train=True):
    x = nn.Dense(x, 4)
    x = nn.BatchNorm(x, use_running_average=not train)
    return nn.Dense(x, 2)


def _model_and_state(seed):
  with nn.stateful() as state:
    _, params = Net.init(jax.random.PRNGKey(seed), jnp.ones((3, 5)))
  with nn.stateful(state) as state:  # one training call moves the stats
    Net.call(params, jnp.arange(15.0).reshape(3, 5) * (seed + 1))
  return nn.Model(Net, params), state


def test_round_trip_model_and_collection(tmp_path):
  model, state = _model_and_state(1)
  checkpoints.save_checkpoint(tmp_path, {'model': model, 'state': state}, 3)
  raw = checkpoints.restore_checkpoint(tmp_path, None)
  assert set(raw['model']) == {'params'}
  assert set(raw['state']) == {'/BatchNorm_1'}
  target_model, target_state = _model_and_state(0)
  restored = checkpoints.restore_checkpoint(
      tmp_path, {'model': target_model, 'state': target_state})
  assert isinstance(restored['model'], nn.Model)
  assert restored['model'].module is Net
  assert isinstance(restored['state'], nn.Collection)
  _assert_trees_equal(restored['model'].params, model.params)
  _assert_trees_equal(restored['state'].as_dict(), state.as_dict())


def _optimizer(seed):
  model, _ = _model_and_state(seed)
  opt = optim.Adam(learning_rate=0.1).create(model)
  grads = jax.tree_util.tree_map(jnp.ones_like, model)
  return opt.apply_gradient(grads)


def test_round_trip_optimizer(tmp_path):
  saved = _optimizer(1)
  checkpoints.save_checkpoint(tmp_path, saved, 1)
  raw = checkpoints.restore_checkpoint(tmp_path, None)
  assert set(raw) == {'target', 'state'}
  assert set(raw['state']) == {'step', 'param_states'}
  restored = checkpoints.restore_checkpoint(tmp_path, _optimizer(0))
  assert isinstance(restored, optim.Optimizer)
  assert int(restored.state.step) == 1
  _assert_trees_equal(restored, saved)


def test_replicated_optimizer_saves_one_copy(tmp_path):
  single = _optimizer(1)
  replicated = single.replicate()
  n = jax.local_device_count()
  assert replicated.state.step.shape == (n,)
  checkpoints.save_checkpoint(tmp_path / 'r', replicated, 1)
  checkpoints.save_checkpoint(tmp_path / 's', single, 1)
  raw = checkpoints.restore_checkpoint(tmp_path / 'r', None)
  _assert_trees_equal(raw, checkpoints.restore_checkpoint(tmp_path / 's',
                                                          None))
  restored = checkpoints.restore_checkpoint(tmp_path / 'r',
                                            _optimizer(0).replicate())
  assert restored.state.step.shape == (n,)
  _assert_trees_equal(jax_utils.unreplicate(restored), single)


# The file layout: plain msgpack plus a sidecar.


def test_a_checkpoint_is_plain_msgpack_with_a_sidecar(tmp_path):
  tree = {'w': np.arange(6.0, dtype=np.float32).reshape(2, 3), 'step': 7}
  path = checkpoints.save_checkpoint(tmp_path, tree, 7)
  with open(path, 'rb') as f:
    data = f.read()
  raw = unpack_2020(data)  # the msgpack library with the 2020 hook
  np.testing.assert_array_equal(raw['w'], tree['w'])
  assert raw['step'] == 7 and data == pack_2020(tree)
  assert serialization.msgpack_restore(data)['step'] == 7
  with open(path + '.meta', 'rb') as f:
    sidecar = f.read()
  meta = json.loads(sidecar)
  check = meta.pop('check')
  assert meta == {'format': 'flaxish.checkpoint', 'format_version': 2,
                  'size': len(data), 'crc32': zlib.crc32(data),
                  'replaces': None}
  assert check == zlib.crc32(json.dumps(meta, separators=(',', ':')).encode())
  assert sidecar.endswith(b'\n') and sidecar.count(b'\n') == 1


def test_2020_files_without_a_sidecar_restore_with_an_info_line(
    tmp_path, caplog):
  tree = {'params': {'kernel': np.ones((2, 3), np.float32)}, 'step': 4}
  (tmp_path / 'checkpoint_4').write_bytes(pack_2020(tree))
  with caplog.at_level(logging.INFO, 'flaxish.training.checkpoints'):
    restored = checkpoints.restore_checkpoint(
        tmp_path, {'params': {'kernel': np.zeros((2, 3), np.float32)},
                   'step': 0})
  assert restored['step'] == 4
  np.testing.assert_array_equal(restored['params']['kernel'], np.ones((2, 3)))
  lines = [r.getMessage() for r in caplog.records
           if 'no sidecar' in r.getMessage()]
  assert lines == [f'checkpoint {tmp_path}/checkpoint_4 has no sidecar .meta: '
                   'read as a 2020 flax checkpoint, unverified']


def _version_1_file(path, tree):
  """A checkpoint as the previous release wrote it (format version 1)."""
  body = pack_2020(tree)
  header = struct_lib.pack('<8sII', b'\xc1FLXCKPT', 1, 0)
  head = struct_lib.pack('<8sQI', b'FLXCKEND', len(body), zlib.crc32(body))
  footer = head + struct_lib.pack('<I', zlib.crc32(head, zlib.crc32(header)))
  path.write_bytes(header + body + footer)


def test_files_of_the_previous_release_restore(tmp_path):
  tree = {'w': np.arange(4.0), 'step': 3}
  _version_1_file(tmp_path / 'checkpoint_3', tree)
  restored = checkpoints.restore_checkpoint(tmp_path, {'w': np.zeros(4),
                                                       'step': 0})
  assert restored['step'] == 3
  np.testing.assert_array_equal(restored['w'], np.arange(4.0))
  data = bytearray((tmp_path / 'checkpoint_3').read_bytes())
  for i in (5, 30, len(data) - 3):  # header, body, footer
    bad = bytearray(data)
    bad[i] ^= 1
    (tmp_path / 'checkpoint_3').write_bytes(bad)
    with pytest.raises(checkpoints.CorruptCheckpointError,
                       match='checkpoint_3 is corrupt'):
      checkpoints.restore_checkpoint(tmp_path, None, step=3)


def test_every_single_bit_flip_and_every_cut_is_caught(tmp_path):
  good = {'w': np.arange(3.0, dtype=np.float32), 'n': 1}
  checkpoints.save_checkpoint(tmp_path, good, 1, keep=2)
  checkpoints.save_checkpoint(tmp_path, {'w': np.ones(3, np.float32), 'n': 2},
                              2, keep=2)
  checked, expected = 0, 0
  for name in ('checkpoint_2', 'checkpoint_2.meta'):
    path = tmp_path / name
    original = path.read_bytes()
    expected += len(original) * 9  # every cut, every bit
    damaged = [original[:cut] for cut in range(len(original))]
    for i in range(len(original) * 8):
      flipped = bytearray(original)
      flipped[i // 8] ^= 1 << (i % 8)
      damaged.append(bytes(flipped))
    for data in damaged:
      path.write_bytes(data)
      with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        restored = checkpoints.restore_checkpoint(tmp_path, good)
      assert restored['n'] == 1, (name, data)  # fell back to step 1
      assert 'checkpoint_2' in str(record[0].message)
      checked += 1
    path.write_bytes(original)
  assert checkpoints.restore_checkpoint(tmp_path, good)['n'] == 2
  assert checked == expected


# Names mean exactly one thing.


def test_only_prefix_plus_integer_step_is_a_checkpoint(tmp_path):
  for step in (1, 2):
    checkpoints.save_checkpoint(tmp_path, {'v': 'ema'}, step,
                                prefix='ckpt_ema_', keep=None)
  path = checkpoints.save_checkpoint(tmp_path, {'v': 'model'}, 1,
                                     prefix='ckpt_', keep=1)
  assert os.path.exists(path) and os.path.exists(path + '.meta')
  assert checkpoints.restore_checkpoint(tmp_path, {'v': ''},
                                        prefix='ckpt_') == {'v': 'model'}
  assert checkpoints.latest_checkpoint(tmp_path, 'ckpt_') == path
  others = ['checkpoint_0.json', 'checkpoint_best.txt', 'checkpoint_007',
            'checkpoint_1.5', 'checkpoint_+3', 'checkpoint_', 'checkpoint_9a']
  for name in others:
    (tmp_path / name).write_text('user data')
  for step in range(3):
    checkpoints.save_checkpoint(tmp_path, {'v': str(step)}, step, keep=2)
  assert checkpoints.restore_checkpoint(tmp_path, {'v': ''}) == {'v': '2'}
  assert checkpoints.latest_checkpoint(tmp_path).endswith('checkpoint_2')
  for name in others:
    assert (tmp_path / name).read_text() == 'user data'
  assert sorted(n for n in _names(tmp_path) if n.startswith('checkpoint')) == (
      sorted(others + ['checkpoint_1', 'checkpoint_2']))
  assert _names(tmp_path)[-3:] == ['ckpt_1', 'ckpt_ema_1', 'ckpt_ema_2']


def test_steps_are_integers(tmp_path):
  for step in (1.5, 'best', True, None):
    with pytest.raises(ValueError, match=r'step=.*: a checkpoint is named '
                       r'<prefix><integer step>; pass an int'):
      checkpoints.save_checkpoint(tmp_path, {}, step)
  path = checkpoints.save_checkpoint(tmp_path, {'a': 1}, np.int32(3))
  assert path.endswith('checkpoint_3')
  assert checkpoints.save_checkpoint(tmp_path, {'a': 1}, 4.0).endswith(
      'checkpoint_4')
  assert checkpoints.save_checkpoint(tmp_path, {'a': 1}, jnp.array(-5),
                                     keep=None).endswith('checkpoint_-5')


def test_keep_zero_or_none_keeps_all(tmp_path):
  for step in range(4):
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, keep=0)
  checkpoints.save_checkpoint(tmp_path, {'s': 4}, 4, keep=None)
  assert _names(tmp_path) == [f'checkpoint_{i}' for i in range(5)]
  for keep in (-1, 1.5, '2'):
    with pytest.raises(ValueError, match=rf"keep={keep!r}: pass how many "
                       r'checkpoints to keep \(an int; 0 or None keeps them '):
      checkpoints.save_checkpoint(tmp_path, {}, 9, keep=keep)


def test_keep_keeps_the_highest_steps(tmp_path):
  for step in [1, 9, 10]:
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, keep=2)
  with pytest.warns(UserWarning, match=r'checkpoint_2 was deleted right after '
                    r'saving: keep=2 keeps the highest steps, and higher ones '
                    r'exist in .* \(checkpoint_9, checkpoint_10\)'):
    checkpoints.save_checkpoint(tmp_path, {'s': 2}, 2, keep=2)
  assert _names(tmp_path) == ['checkpoint_10', 'checkpoint_9']
  assert checkpoints.restore_checkpoint(tmp_path, {'s': 0}) == {'s': 10}


def test_missing_directory_warns_and_must_exist_raises(tmp_path, caplog):
  target = {'a': np.zeros(2)}
  typo = tmp_path / 'wrokdir'
  with caplog.at_level(logging.WARNING, 'flaxish.training.checkpoints'):
    assert checkpoints.restore_checkpoint(typo, target) is target
  assert [r.getMessage() for r in caplog.records] == [
      f'checkpoint directory {typo} does not exist: nothing restored, the '
      'target is returned unchanged (pass must_exist=True to make this an '
      'error)']
  with pytest.raises(FileNotFoundError,
                     match=f'checkpoint directory {typo} does not exist'):
    checkpoints.restore_checkpoint(typo, target, must_exist=True)
  with pytest.raises(FileNotFoundError,
                     match=f'no checkpoint with prefix "checkpoint_" in '
                     f'{tmp_path}'):
    checkpoints.restore_checkpoint(tmp_path, target, must_exist=True)
  assert checkpoints.restore_checkpoint(tmp_path, target) is target


def test_natural_sort_and_the_2020_regular_expressions():
  names = ['ckpt_10', 'ckpt_9', 'ckpt_1.5', 'ckpt_-2', 'ckpt_1e1x', 'ckpt_2']
  assert checkpoints.natural_sort(names) == [
      'ckpt_-2', 'ckpt_1.5', 'ckpt_2', 'ckpt_9', 'ckpt_10', 'ckpt_1e1x']
  assert checkpoints.natural_sort(['file_0.1', 'file_-0.2', 'file_2.0']) == [
      'file_-0.2', 'file_0.1', 'file_2.0']
  assert checkpoints.natural_sort(['a-3', 'a-1', 'a-2'], signed=False) == [
      'a-1', 'a-2', 'a-3']
  assert checkpoints.SIGNED_FLOAT_RE.findall('x-1.5e3_+2_.5_7.') == [
      '-1.5e3', '+2', '.5', '7.']
  assert checkpoints.UNSIGNED_FLOAT_RE.findall('x-1.5e3_+2_.5') == [
      '1.5e3', '2', '.5']
  assert checkpoints.SIGNED_FLOAT_RE.split('a-1b') == ['a', '-1', 'b']
  assert checkpoints.UNSIGNED_FLOAT_RE.split('a-1b') == ['a', '1', 'b']
  assert checkpoints.SIGNED_FLOAT_RE.groups == 1
  assert checkpoints.UNSIGNED_FLOAT_RE.groups == 1


def test_existing_step_needs_overwrite(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'a': 1}, 4)
  with pytest.raises(ValueError, match='checkpoint_4 already exists; pass '
                     'overwrite=True'):
    checkpoints.save_checkpoint(tmp_path, {'a': 2}, 4)
  checkpoints.save_checkpoint(tmp_path, {'a': 3}, 4, overwrite=True)
  assert checkpoints.restore_checkpoint(tmp_path, {'a': 0}) == {'a': 3}
  assert _names(tmp_path) == ['checkpoint_4']


def test_an_interrupted_overwrite_keeps_the_previous_version(tmp_path,
                                                             monkeypatch):
  checkpoints.save_checkpoint(tmp_path, {'a': np.full(3, 1.0)}, 4)
  replace = os.replace

  def crash_before_the_data_rename(src, dst):
    if not str(dst).endswith('.meta'):
      raise KeyboardInterrupt('killed')
    replace(src, dst)

  monkeypatch.setattr(os, 'replace', crash_before_the_data_rename)
  with pytest.raises(KeyboardInterrupt):
    checkpoints.save_checkpoint(tmp_path, {'a': np.full(3, 2.0)}, 4,
                                overwrite=True)
  monkeypatch.undo()
  assert json.loads((tmp_path / 'checkpoint_4.meta').read_bytes())[
      'replaces'] is not None  # the new sidecar, the old data
  restored = checkpoints.restore_checkpoint(tmp_path, {'a': np.zeros(3)})
  np.testing.assert_array_equal(restored['a'], np.full(3, 1.0))
  assert _names(tmp_path) == ['checkpoint_4']  # no temp file left


def test_step_zero_restores_step_zero(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'a': 0}, 0, keep=5)
  checkpoints.save_checkpoint(tmp_path, {'a': 1}, 1, keep=5)
  assert checkpoints.restore_checkpoint(tmp_path, {'a': -1}, step=0) == {
      'a': 0}
  assert checkpoints.restore_checkpoint(tmp_path, {'a': -1}) == {'a': 1}
  with pytest.raises(ValueError, match=r"no checkpoint for step 7: .*"
                     r"checkpoint_7 does not exist \(found: \['checkpoint_0', "
                     r"'checkpoint_1'\]\)"):
    checkpoints.restore_checkpoint(tmp_path, {'a': 0}, step=7)
  path = os.path.join(tmp_path, 'checkpoint_1')
  assert checkpoints.restore_checkpoint(path, {'a': 5}) == {'a': 1}


def test_strict_mismatch_names_the_file(tmp_path):
  path = checkpoints.save_checkpoint(tmp_path, {'w': np.zeros((3, 4))}, 1)
  target = {'w': np.zeros((3, 5)), 'b': np.zeros(2)}
  with pytest.raises(serialization.RestoreError) as info:
    checkpoints.restore_checkpoint(tmp_path, target)
  message = str(info.value)
  assert message.startswith(f'checkpoint {path} does not match the target')
  assert '/w: shape (3, 4) in the file, (3, 5) in the target' in message
  assert '/b: missing in the file' in message
  restored, skipped = checkpoints.restore_checkpoint(tmp_path, target,
                                                     strict=False)
  assert restored['w'].shape == (3, 5) and len(skipped) == 2


def test_newer_format_versions_are_refused(tmp_path):
  path = checkpoints.save_checkpoint(tmp_path, {'a': 1}, 1)
  meta = json.loads((tmp_path / 'checkpoint_1.meta').read_bytes())
  meta['format_version'] = 3
  (tmp_path / 'checkpoint_1.meta').write_bytes(
      checkpoints._meta_bytes(meta))  # pylint: disable=protected-access
  with pytest.raises(serialization.UnsupportedCheckpointError,
                     match=f'checkpoint {path} has format version 3; this '
                     'flaxish reads versions up to 2: upgrade flaxish'):
    checkpoints.restore_checkpoint(tmp_path, {'a': 0})


# Crash loops, failed writes.


@pytest.mark.parametrize('damage', ['flip', 'truncate', 'no data',
                                    'bad sidecar'])
def test_a_corrupt_newest_checkpoint_does_not_block_saving_it_again(
    tmp_path, damage):
  for step in (1, 2):
    checkpoints.save_checkpoint(tmp_path, {'a': np.full(50, float(step))},
                                step, keep=3)
  newest = tmp_path / 'checkpoint_2'
  data = bytearray(newest.read_bytes())
  if damage == 'flip':
    data[100] ^= 0x10
  elif damage == 'truncate':
    data = data[:-7]
  elif damage == 'no data':
    data = b''
  else:
    (tmp_path / 'checkpoint_2.meta').write_bytes(b'{"format":')
  newest.write_bytes(data)
  target = {'a': np.zeros(50)}
  with pytest.warns(UserWarning, match=f'skipped corrupt or incomplete '
                    f'checkpoint.*{newest} .*Restored the newest intact one, '
                    f'.*checkpoint_1'):
    restored = checkpoints.restore_checkpoint(tmp_path, target)
  assert restored['a'][0] == 1.0
  with pytest.warns(UserWarning, match=f'checkpoint {newest} is corrupt or '
                    f'incomplete .*; saving over it, the bad copy is kept as '
                    f'{newest}.corrupt'):
    checkpoints.save_checkpoint(tmp_path, {'a': np.full(50, 2.5)}, 2, keep=3)
  assert checkpoints.restore_checkpoint(tmp_path, target)['a'][0] == 2.5
  assert (tmp_path / 'checkpoint_2.corrupt').read_bytes() == data
  assert _names(tmp_path) == ['checkpoint_1', 'checkpoint_2',
                              'checkpoint_2.corrupt',
                              'checkpoint_2.meta.corrupt']
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=f'{newest} is corrupt'):
    (tmp_path / 'checkpoint_2').write_bytes(b'\x00')
    checkpoints.restore_checkpoint(tmp_path, target, step=2)


def test_all_corrupt_is_an_error_naming_each_file(tmp_path):
  for step in (1, 2):
    checkpoints.save_checkpoint(tmp_path, {'a': step}, step, keep=3)
    (tmp_path / f'checkpoint_{step}').write_bytes(b'\xc0\xc0')
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=r'all 2 checkpoints with prefix "checkpoint_" are '
                     r'corrupt: .*checkpoint_2 \(.*\); .*checkpoint_1 '):
    checkpoints.restore_checkpoint(tmp_path, {'a': 0})


@pytest.mark.parametrize('where,code', [('fsync', errno.ENOSPC),
                                        ('write', errno.ENOSPC),
                                        ('rename', errno.EACCES),
                                        ('open', errno.EROFS)])
def test_os_errors_name_the_path_and_leave_nothing_behind(
    tmp_path, monkeypatch, where, code):
  checkpoints.save_checkpoint(tmp_path, {'a': np.arange(3.0)}, 1, keep=5)
  before = sorted(os.listdir(tmp_path))
  error = OSError(code, os.strerror(code))

  def fail(*args, **kwargs):
    raise error

  if where == 'fsync':
    monkeypatch.setattr(os, 'fsync', fail)
  elif where == 'rename':
    monkeypatch.setattr(os, 'replace', fail)
  elif where == 'open':
    monkeypatch.setattr(checkpoints, 'open', fail, raising=False)
  else:
    monkeypatch.setattr(checkpoints, 'write_checkpoint', fail)
  path = os.path.join(tmp_path, 'checkpoint_2')
  with pytest.raises(OSError) as info:
    checkpoints.save_checkpoint(tmp_path, {'a': np.arange(9.0)}, 2, keep=5)
  monkeypatch.undo()
  assert info.value.errno == code
  assert str(info.value) == (
      f'[Errno {code}] {os.strerror(code)}: could not save checkpoint {path} '
      f'in directory {tmp_path}; no temp file is left, earlier checkpoints '
      'are intact')
  assert sorted(os.listdir(tmp_path)) == before
  np.testing.assert_array_equal(
      checkpoints.restore_checkpoint(tmp_path, {'a': np.zeros(3)})['a'],
      np.arange(3.0))


def test_failed_save_leaves_no_file(tmp_path):
  with pytest.raises(TypeError, match='cannot serialize the object at /bad'):
    checkpoints.save_checkpoint(tmp_path, {'ok': np.ones(3),
                                           'bad': object()}, 1)
  assert os.listdir(tmp_path) == []


# Temp files and concurrent writers.


def test_only_provably_dead_temp_files_are_removed(tmp_path):
  host = checkpoints._HOST  # pylint: disable=protected-access
  sleeper = subprocess.Popen([sys.executable, '-c',
                              'import time; time.sleep(60)'])
  try:
    dead = subprocess.run([sys.executable, '-c',
                           'import os; print(os.getpid())'],
                          capture_output=True, text=True, check=True)
    names = {
        'dead': f'.checkpoint_5.{host}.{int(dead.stdout)}.0a1b.tmp',
        'alive': f'.checkpoint_5.{host}.{sleeper.pid}.0a1b.tmp',
        'mine': f'.checkpoint_5.meta.{host}.{os.getpid()}.0a1c.tmp',
        'other host': '.checkpoint_6.otherhost.1.0a1d.tmp',
        'old other host': '.checkpoint_6.otherhost.2.0a1e.tmp',
        'old format': '.checkpoint_7.0123456789ab.tmp',
        'old old format': '.checkpoint_7.0123456789ac.tmp',
        'other prefix': f'.ema_5.{host}.{int(dead.stdout)}.0a1f.tmp'}
    for name in names.values():
      (tmp_path / name).write_bytes(b'partial')
    old = time.time() - checkpoints.STALE_TEMP_SECONDS - 60
    for key in ('old other host', 'old old format'):
      os.utime(tmp_path / names[key], (old, old))
    checkpoints.save_checkpoint(tmp_path, {'a': 1}, 1)
    left = set(os.listdir(tmp_path))
    assert {k for k, n in names.items() if n in left} == {
        'alive', 'other host', 'old format', 'other prefix'}
    assert checkpoints.restore_checkpoint(tmp_path, {'a': 0}) == {'a': 1}
  finally:
    sleeper.kill()
    sleeper.wait()


_CONCURRENT_WORKER = '''
import sys
import jax
jax.process_index = lambda: 0
import numpy as np
from flaxish.training import checkpoints
ckpt_dir, first = sys.argv[1], int(sys.argv[2])
failures = 0
for step in range(first, first + 80, 2):
  try:
    checkpoints.save_checkpoint(ckpt_dir, {'w': np.full(20000, step)}, step,
                                keep=None)
  except Exception as e:
    failures += 1
    print(repr(e), file=sys.stderr)
print(failures)
'''


def test_two_processes_saving_into_one_directory(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  procs = [subprocess.Popen([sys.executable, '-c', _CONCURRENT_WORKER,
                             str(tmp_path), str(first)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
           for first in (0, 1)]
  for proc in procs:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0 and out.strip() == '0', err[-3000:]
  assert _names(tmp_path) == sorted(f'checkpoint_{i}' for i in range(80))
  for step in (0, 41, 79):
    restored = checkpoints.restore_checkpoint(tmp_path, {'w': np.zeros(20000)},
                                              step=step)
    assert (restored['w'] == step).all()


# Processes.


def test_only_process_0_writes(tmp_path, monkeypatch):
  path = checkpoints.save_checkpoint(tmp_path, {'a': 1}, 1)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  assert checkpoints.save_checkpoint(tmp_path, {'a': 2}, 2) == os.path.join(
      tmp_path, 'checkpoint_2')
  with checkpoints.AsyncCheckpointer() as checkpointer:
    checkpointer.save(tmp_path, {'a': 3}, 3)
  assert _names(tmp_path) == ['checkpoint_1']
  assert checkpoints.restore_checkpoint(tmp_path, {'a': 0}) == {'a': 1}
  assert checkpoints.restore_checkpoint(path, {'a': 0}) == {'a': 1}


# Asynchronous saves.


def test_async_save_copies_then_writes(tmp_path):
  params = {'w': np.arange(10.0), 'j': jnp.ones(3)}
  with checkpoints.AsyncCheckpointer() as checkpointer:
    path = checkpointer.save(tmp_path, params, 1)
    params['w'][:] = -1  # after save returns, the arrays may change
    checkpointer.wait()
    assert os.path.exists(path)
    checkpointer.save(tmp_path, params, 2)
  restored = checkpoints.restore_checkpoint(tmp_path, params, step=2)
  np.testing.assert_array_equal(restored['w'], -np.ones(10))
  assert _names(tmp_path) == ['checkpoint_2']


def test_async_and_sync_saves_write_the_same_bytes(tmp_path):
  tree = {'z': np.arange(3.0), 'a': jnp.ones(2), 'n': np.int32(4)}
  path = checkpoints.save_checkpoint(tmp_path / 'sync', tree, 1)
  with checkpoints.AsyncCheckpointer() as checkpointer:
    async_path = checkpointer.save(tmp_path / 'async', tree, 1)
  with open(path, 'rb') as f, open(async_path, 'rb') as g:
    data = f.read()
    assert g.read() == data
  assert list(unpack_2020(data)) == ['z', 'a', 'n']  # the order of `tree`


def test_async_at_most_one_save_in_flight(tmp_path, monkeypatch):
  active, peak = [0], [0]
  lock = threading.Lock()
  original = checkpoints._write_atomically  # pylint: disable=protected-access

  def slow_write(*args):
    with lock:
      active[0] += 1
      peak[0] = max(peak[0], active[0])
    time.sleep(0.05)
    original(*args)
    with lock:
      active[0] -= 1

  monkeypatch.setattr(checkpoints, '_write_atomically', slow_write)
  checkpointer = checkpoints.AsyncCheckpointer()
  for step in range(4):
    checkpointer.save(tmp_path, {'a': np.full(3, step)}, step, keep=4)
  checkpointer.close()
  assert peak[0] == 1
  assert _names(tmp_path) == [f'checkpoint_{i}' for i in range(4)]
  with pytest.raises(ValueError, match='closed'):
    checkpointer.save(tmp_path, {}, 9)


def test_async_errors_are_logged_and_raised_by_the_next_call(
    tmp_path, monkeypatch, caplog):
  def failing(f, state):
    raise OSError(errno.ENOSPC, 'No space left on device')

  checkpointer = checkpoints.AsyncCheckpointer()
  monkeypatch.setattr(checkpoints, 'write_checkpoint', failing)
  path = os.path.join(tmp_path, 'checkpoint_1')
  checkpointer.save(tmp_path, {'a': 1}, 1)
  with pytest.raises(OSError, match=f'could not save checkpoint {path}') as e:
    checkpointer.save(tmp_path, {'a': 2}, 2)
  assert e.value.__notes__ == [
      f'(raised by the background save of checkpoint {path})']
  assert any(f'the background save of checkpoint {path} failed' in
             r.getMessage() for r in caplog.records)
  checkpointer.save(tmp_path, {'a': 3}, 3)
  with pytest.raises(OSError, match='checkpoint_3'):
    checkpointer.wait()
  checkpointer.wait()  # reported once
  checkpointer.close()


_ASYNC_EXIT_WORKER = '''
import errno, sys
import jax
jax.process_index = lambda: 0
from flaxish.training import checkpoints

def failing(f, state):
  raise OSError(errno.ENOSPC, 'No space left on device')

checkpoints.write_checkpoint = failing
checkpoints.AsyncCheckpointer().save(sys.argv[1], {'a': 1}, 5)
print('the script ended without wait() or close()')
'''


def test_an_unwaited_failed_async_save_fails_the_process(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', _ASYNC_EXIT_WORKER,
                         str(tmp_path)], env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr
  assert 'the script ended' in proc.stdout
  path = os.path.join(tmp_path, 'checkpoint_5')
  assert (f'No space left on device: could not save checkpoint {path} in '
          f'directory {tmp_path}') in proc.stderr
  assert (f'(raised by the background save of checkpoint {path}); exiting '
          'with status 1') in proc.stderr
  assert os.listdir(tmp_path) == []


# Crash safety: SIGKILL at random moments.

_TREE_SOURCE = '''
import numpy as np

def make_tree(step, version=0):
  rng = np.random.default_rng(step)
  return {'step': step, 'version': version,
          'params': {f'w{i}': rng.standard_normal((32, 1024 * (i + 1)),
                                                  dtype=np.float32)
                     for i in range(4)}}
'''

_WORKER = '''
import os, sys
import jax
jax.process_index = lambda: 0  # keep XLA out of the forked children
from flaxish.training import checkpoints
exec(sys.argv[2])

ckpt_dir = sys.argv[1]
for line in sys.stdin:
  step = int(line)
  pid = os.fork()
  if pid == 0:  # save step, overwrite it, save step + 1, ... until killed
    try:
      while True:
        checkpoints.save_checkpoint(ckpt_dir, make_tree(step), step, keep=3)
        checkpoints.save_checkpoint(ckpt_dir, make_tree(step, 1), step, keep=3,
                                    overwrite=True)
        step += 1
    finally:
      os._exit(1)
  print(pid, flush=True)
  _, status = os.waitpid(pid, 0)
  print(status, flush=True)
'''


def _read_line(proc, timeout=30.0):
  fd = proc.stdout.fileno()
  data = b''
  deadline = time.monotonic() + timeout
  while not data.endswith(b'\n'):
    ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
    if not ready:
      raise TimeoutError('the checkpoint worker did not answer')
    chunk = os.read(fd, 1)
    if not chunk:
      raise EOFError(proc.stderr.read().decode())
    data += chunk
  return data.decode().strip()


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_sigkill_during_saves_never_leaves_a_partial_checkpoint(tmp_path):
  namespace = {}
  exec(_TREE_SOURCE, namespace)  # pylint: disable=exec-used
  make_tree = namespace['make_tree']
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.Popen(
      [sys.executable, '-c', textwrap.dedent(_WORKER), str(tmp_path),
       _TREE_SOURCE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, env=env)
  rng = np.random.default_rng(0)
  latest, temps_seen = -1, 0
  try:
    for _ in range(20):
      proc.stdin.write(f'{latest + 1}\n'.encode())
      proc.stdin.flush()
      pid = int(_read_line(proc))
      time.sleep(float(rng.uniform(0.0, 0.25)))
      os.kill(pid, signal.SIGKILL)
      assert int(_read_line(proc)) == signal.SIGKILL  # really killed
      temps_seen += any(n.endswith('.tmp') for n in os.listdir(tmp_path))
      # Every checkpoint is complete and verifies.
      for name in _names(tmp_path):
        if name.startswith('checkpoint_'):
          checkpoints.restore_checkpoint(tmp_path / name, None)
      if checkpoints.latest_checkpoint(tmp_path) is None:
        continue  # killed before the first save completed
      restored = checkpoints.restore_checkpoint(tmp_path, make_tree(0))
      step = restored['step']
      assert step >= latest
      _assert_trees_equal(restored, make_tree(step, restored['version']))
      latest = step
  finally:
    proc.stdin.close()
    try:
      proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    proc.stdout.close()
    proc.stderr.close()
  assert latest > 0
  print(f'{temps_seen} of 20 kills left a partial temp file behind')


# Two real processes (jax.distributed on localhost, in worker subprocesses).

_DISTRIBUTED_WORKER = '''
import json, os, sys, time
import jax
try:
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
except Exception:  # newer JAX: gloo is the default
  pass
process_id, port, ckpt_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                           num_processes=2, process_id=process_id)
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from flaxish.training import checkpoints

mesh = Mesh(np.array(jax.devices()), ('d',))
data = np.arange(4.0 * len(jax.devices())).reshape(-1, 2)

def split(values):
  return jax.make_array_from_callback(
      values.shape, NamedSharding(mesh, PartitionSpec('d')),
      lambda i: values[i])

sharded = split(data)
replicated = jax.make_array_from_callback(
    (3,), NamedSharding(mesh, PartitionSpec()), lambda i: np.ones(3)[i])
# Two split arrays, in an order other than tree_leaves' (sorted) one.
tree = {'sharded': sharded, 'other': split(data * 10),
        'replicated': replicated, 'writer': np.int32(process_id)}
path = checkpoints.save_checkpoint(ckpt_dir, tree, 1)
deadline = time.time() + 30
while not os.path.exists(path) and time.time() < deadline:
  time.sleep(0.02)
raw = checkpoints.restore_checkpoint(ckpt_dir, None)
print(json.dumps({'addressable': sharded.is_fully_addressable,
                  'writer': int(raw['writer']),
                  'sharded_ok': bool(np.array_equal(raw['sharded'], data)),
                  'other_ok': bool(np.array_equal(raw['other'], data * 10)),
                  'replicated_ok': bool(np.array_equal(raw['replicated'],
                                                       np.ones(3))),
                  'files': sorted(os.listdir(ckpt_dir))}))
'''


def test_two_real_processes_only_process_0_writes(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  procs = [subprocess.Popen(
      [sys.executable, '-c', _DISTRIBUTED_WORKER, str(i), str(port),
       str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      env=env, text=True) for i in range(2)]
  outputs = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=90)
      assert proc.returncode == 0, err[-3000:]
      outputs.append(json.loads(out.strip().splitlines()[-1]))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  for out in outputs:
    assert out['addressable'] is False  # the gather path was taken
    assert out['writer'] == 0  # process 0's tree is the one in the file
    assert out['sharded_ok'] and out['other_ok'] and out['replicated_ok']
    assert out['files'] == ['checkpoint_1', 'checkpoint_1.meta']
