"""Tests for flaxish.training.checkpoints: saving, restoring, keep, crashes."""
import collections
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import jax_utils, nn, optim, serialization, struct
from flaxish.serialization import checkpoint_file
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
  return sorted(os.listdir(ckpt_dir))


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


# Names, keep, overwrite, step selection.


def test_natural_sort():
  names = ['ckpt_10', 'ckpt_9', 'ckpt_1.5', 'ckpt_-2', 'ckpt_1e1x', 'ckpt_2']
  assert checkpoints.natural_sort(names) == [
      'ckpt_-2', 'ckpt_1.5', 'ckpt_2', 'ckpt_9', 'ckpt_10', 'ckpt_1e1x']
  assert checkpoints.natural_sort(['a-3', 'a-1', 'a-2'], signed=False) == [
      'a-1', 'a-2', 'a-3']
  assert checkpoints.natural_sort(['b2', 'a10', 'a9']) == ['a9', 'a10', 'b2']


def test_keep_keeps_the_highest_steps(tmp_path):
  for step in [1, 9, 10]:
    checkpoints.save_checkpoint(tmp_path, {'s': step}, step, keep=2)
  for step in [2, 3]:
    with pytest.warns(UserWarning, match='deleted right after saving'):
      checkpoints.save_checkpoint(tmp_path, {'s': step}, step, keep=2)
  assert _names(tmp_path) == ['checkpoint_10', 'checkpoint_9']
  assert checkpoints.latest_checkpoint(tmp_path) == os.path.join(
      tmp_path, 'checkpoint_10')
  assert checkpoints.restore_checkpoint(tmp_path, {'s': 0}) == {'s': 10}
  checkpoints.save_checkpoint(tmp_path, {'s': 11}, 11, keep=None)
  assert len(_names(tmp_path)) == 3


def test_saving_a_lower_step_deletes_it_again(tmp_path):
  # The 2020 rule: the highest-sorted names survive, not the newest file.
  checkpoints.save_checkpoint(tmp_path, {'s': 2.0}, 2.0)
  with pytest.warns(UserWarning, match='checkpoint_1.0 was deleted right '
                    'after saving: keep=1 keeps the highest steps'):
    checkpoints.save_checkpoint(tmp_path, {'s': 1.0}, 1.0)
  assert _names(tmp_path) == ['checkpoint_2.0']


def test_prefixes_are_independent(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'a': 1}, 5, prefix='model_')
  checkpoints.save_checkpoint(tmp_path, {'a': 2}, 1, prefix='ema_')
  checkpoints.save_checkpoint(tmp_path, {'a': 3}, 2, prefix='ema_')
  assert _names(tmp_path) == ['ema_2', 'model_5']
  assert checkpoints.restore_checkpoint(tmp_path, {'a': 0},
                                        prefix='model_') == {'a': 1}


def test_existing_step_needs_overwrite(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'a': 1}, 4)
  with pytest.raises(ValueError, match='checkpoint_4 already exists; pass '
                     'overwrite=True'):
    checkpoints.save_checkpoint(tmp_path, {'a': 2}, 4)
  checkpoints.save_checkpoint(tmp_path, {'a': 3}, 4, overwrite=True)
  assert checkpoints.restore_checkpoint(tmp_path, {'a': 0}) == {'a': 3}
  assert _names(tmp_path) == ['checkpoint_4']


def test_step_zero_restores_step_zero(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'a': 0}, 0, keep=5)
  checkpoints.save_checkpoint(tmp_path, {'a': 1}, 1, keep=5)
  assert checkpoints.restore_checkpoint(tmp_path, {'a': -1}, step=0) == {
      'a': 0}
  assert checkpoints.restore_checkpoint(tmp_path, {'a': -1}) == {'a': 1}
  assert checkpoints.restore_checkpoint(tmp_path, {'a': -1},
                                        step=np.int32(1)) == {'a': 1}


def test_missing_step_and_empty_directory(tmp_path):
  target = {'a': np.zeros(2)}
  assert checkpoints.restore_checkpoint(tmp_path / 'nothing', target) is target
  assert checkpoints.latest_checkpoint(tmp_path) is None
  checkpoints.save_checkpoint(tmp_path, {'a': 1}, 3)
  with pytest.raises(ValueError, match=r"no checkpoint for step 7: .*"
                     r"checkpoint_7 does not exist \(found: \['checkpoint_3'"):
    checkpoints.restore_checkpoint(tmp_path, {'a': 0}, step=7)


def test_restore_from_a_file_path(tmp_path):
  path = checkpoints.save_checkpoint(tmp_path, {'a': 5}, 3)
  assert checkpoints.restore_checkpoint(path, {'a': 0}) == {'a': 5}


def test_invalid_keep(tmp_path):
  with pytest.raises(ValueError, match='keep=0: pass a positive int'):
    checkpoints.save_checkpoint(tmp_path, {}, 1, keep=0)


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


# Temp files and corruption.


def test_temp_files_are_never_checkpoints(tmp_path):
  checkpoints.save_checkpoint(tmp_path, {'a': 1}, 1)
  (tmp_path / '.checkpoint_2.abc.tmp').write_bytes(b'partial')
  (tmp_path / 'checkpoint_tmp').write_bytes(b'2020 temp name')
  assert checkpoints.latest_checkpoint(tmp_path).endswith('checkpoint_1')
  assert checkpoints.restore_checkpoint(tmp_path, {'a': 0}) == {'a': 1}
  checkpoints.save_checkpoint(tmp_path, {'a': 3}, 3)
  assert '.checkpoint_2.abc.tmp' not in _names(tmp_path)  # stale: removed


def test_corrupt_newest_falls_back_with_a_warning(tmp_path):
  for step in range(3):
    checkpoints.save_checkpoint(tmp_path, {'a': np.full(100, step * 1.0)}, step,
                                keep=3)
  newest = tmp_path / 'checkpoint_2'
  newest.write_bytes(newest.read_bytes()[:-10])  # truncated
  middle = tmp_path / 'checkpoint_1'
  data = bytearray(middle.read_bytes())
  data[200] ^= 0x04  # one flipped bit in the array data
  middle.write_bytes(data)
  with pytest.warns(UserWarning) as record:
    restored = checkpoints.restore_checkpoint(tmp_path, {'a': np.zeros(100)})
  np.testing.assert_array_equal(restored['a'], np.zeros(100))
  message = str(record[0].message)
  assert str(newest) in message and str(middle) in message
  assert 'checkpoint_0' in message
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match=f'{middle} is corrupt.*checksum'):
    checkpoints.restore_checkpoint(tmp_path, {'a': np.zeros(100)}, step=1)
  os.remove(tmp_path / 'checkpoint_0')
  with pytest.raises(checkpoints.CorruptCheckpointError,
                     match='all 2 checkpoints .* are corrupt'):
    checkpoints.restore_checkpoint(tmp_path, {'a': np.zeros(100)})


def test_failed_save_leaves_no_file(tmp_path):
  with pytest.raises(TypeError, match='cannot serialize'):
    checkpoints.save_checkpoint(tmp_path, {'ok': np.ones(3),
                                           'bad': object()}, 1)
  assert _names(tmp_path) == []


# Processes.


def test_only_process_0_writes(tmp_path, monkeypatch):
  path = checkpoints.save_checkpoint(tmp_path, {'a': 1}, 1)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  assert checkpoints.save_checkpoint(tmp_path, {'a': 2}, 2) == os.path.join(
      tmp_path, 'checkpoint_2')
  with checkpoints.AsyncCheckpointer() as checkpointer:
    checkpointer.save(tmp_path, {'a': 3}, 3)
  assert _names(tmp_path) == ['checkpoint_1']
  # Every process can restore what process 0 wrote.
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


def test_async_errors_surface_on_the_next_call(tmp_path, monkeypatch):
  def failing(state, path, *args):
    raise OSError(f'disk full while writing {path}')

  checkpointer = checkpoints.AsyncCheckpointer()
  monkeypatch.setattr(checkpoints, '_write_atomically', failing)
  checkpointer.save(tmp_path, {'a': 1}, 1)
  with pytest.raises(OSError, match='disk full') as info:
    checkpointer.save(tmp_path, {'a': 2}, 2)
  assert 'background save of' in ''.join(info.value.__notes__)
  checkpointer.save(tmp_path, {'a': 3}, 3)
  with pytest.raises(OSError, match='checkpoint_3'):
    checkpointer.wait()
  checkpointer.wait()  # reported once
  # Errors found before the copy are raised by save itself.
  with pytest.raises(TypeError, match=r'cannot save the object at /bad'):
    checkpointer.save(tmp_path, {'bad': object()}, 4)
  checkpointer.close()


# Crash safety: SIGKILL at random moments.

_TREE_SOURCE = '''
import numpy as np

def make_tree(step):
  rng = np.random.default_rng(step)
  return {'step': step,
          'params': {f'w{i}': rng.standard_normal((32, 1024 * (i + 1)),
                                                  dtype=np.float32)
                     for i in range(4)},
          'note': f'step {step}'}
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
  if pid == 0:  # save step, step + 1, ... until killed
    try:
      while True:
        checkpoints.save_checkpoint(ckpt_dir, make_tree(step), step, keep=3)
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
    for _ in range(24):
      proc.stdin.write(f'{latest + 1}\n'.encode())
      proc.stdin.flush()
      pid = int(_read_line(proc))
      time.sleep(float(rng.uniform(0.0, 0.25)))
      os.kill(pid, signal.SIGKILL)
      assert int(_read_line(proc)) == signal.SIGKILL  # really killed
      temps_seen += any(n.endswith('.tmp') for n in os.listdir(tmp_path))
      # Every file under a checkpoint name is complete and verifies.
      for path in [os.path.join(tmp_path, n) for n in os.listdir(tmp_path)
                   if n.startswith('checkpoint_')]:
        checkpoint_file.read_checkpoint(path)
      if checkpoints.latest_checkpoint(tmp_path) is None:
        continue  # killed before the first save completed
      restored = checkpoints.restore_checkpoint(tmp_path, make_tree(0))
      step = restored['step']
      assert step >= latest
      _assert_trees_equal(restored, make_tree(step))
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
  print(f'{temps_seen} of 24 kills left a partial temp file behind')


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
sharded = jax.make_array_from_callback(
    data.shape, NamedSharding(mesh, PartitionSpec('d')), lambda i: data[i])
replicated = jax.make_array_from_callback(
    (3,), NamedSharding(mesh, PartitionSpec()), lambda i: np.ones(3)[i])
tree = {'sharded': sharded, 'replicated': replicated,
        'writer': np.int32(process_id)}
path = checkpoints.save_checkpoint(ckpt_dir, tree, 1)
deadline = time.time() + 30
while not os.path.exists(path) and time.time() < deadline:
  time.sleep(0.02)
raw = checkpoints.restore_checkpoint(ckpt_dir, None)
print(json.dumps({'addressable': sharded.is_fully_addressable,
                  'writer': int(raw['writer']),
                  'sharded_ok': bool(np.array_equal(raw['sharded'], data)),
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
    assert out['sharded_ok'] and out['replicated_ok']
    assert out['files'] == ['checkpoint_1']
