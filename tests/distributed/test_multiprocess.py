"""Two processes x 4 fake CPU devices on 127.0.0.1 (worker subprocesses,
a free port, timeouts): training equals one process's, the checkpoint is
written once and restored by both, a failing process stops the other."""
import json
import os
import re

import numpy as np

from tests.distributed import _launch
from tests.distributed import _mnist_setup as setup

TRAIN_TIMEOUT = 240  # seconds for the whole run; it takes ~10-30 s
FAILURE_TIMEOUT = 120
HEARTBEAT = 5  # seconds: how soon the coordinator declares a process dead


def _load(out_dir, i):
  with open(os.path.join(out_dir, f'process{i}.json')) as f:
    info = json.load(f)
  with np.load(os.path.join(out_dir, f'process{i}.npz')) as f:
    arrays = {k: f[k] for k in f.files}
  return info, arrays


def _part(arrays, kind):
  return {k.split('/', 1)[1]: v for k, v in arrays.items()
          if k.startswith(kind + '/')}


def test_two_processes_train_like_one_and_checkpoint_once(tmp_path):
  params = setup.initial_params()
  params_path = str(tmp_path / 'params.npz')
  setup.save_params(params_path, params)
  workers = _launch.run_workers('_train_worker.py',
                                [str(tmp_path), params_path],
                                timeout=TRAIN_TIMEOUT)
  assert [w.returncode for w in workers] == [0, 0], _launch.logs(workers)
  reference = setup.reference_params()

  infos, results = zip(*(_load(tmp_path, i) for i in range(2)))
  for i, info in enumerate(infos):
    assert info['initialize'] and info['initialize_again'], info
    assert (info['process_index'], info['process_count']) == (i, 2)
    assert (info['device_count'], info['local_device_count']) == (8, 4)
    assert info['rows'] == [8 * i, 8 * i + 8]
    assert info['jit_is_global'] and info['jit_sharding_replicated'], info
  for kind in ('jit', 'pmap'):
    for i in range(2):
      setup.assert_params_close(_part(results[i], kind), reference,
                                f'{kind} training, process {i}')
    # Every process holds the same replicated values.
    for name, value in _part(results[0], kind).items():
      np.testing.assert_array_equal(value, _part(results[1], kind)[name])

  # Process 0 wrote the one checkpoint; both restored what it wrote.
  assert [info['writes'] for info in infos] == [1, 0]
  assert sorted(os.listdir(tmp_path / 'ckpt')) == ['checkpoint_3',
                                                 'checkpoint_3.meta']
  for i, info in enumerate(infos):
    assert info['checkpoint_path'] == str(tmp_path / 'ckpt' / 'checkpoint_3')
    assert info['restored_step'] == setup.NUM_STEPS
    assert info['replicated_again_equal']
    restored, trained = _part(results[i], 'restored'), _part(results[i], 'jit')
    for name, value in trained.items():
      np.testing.assert_array_equal(restored[name], value)


def _run_failure(mode):
  workers = _launch.run_workers('_failure_worker.py', [mode, str(HEARTBEAT)],
                                timeout=FAILURE_TIMEOUT)
  log = _launch.logs(workers)
  assert all(w.returncode is not None for w in workers), (
      f'a worker hung for {FAILURE_TIMEOUT} s:\n{log}')
  # Both ran steps 0-2 together before process 1 failed.
  for w in workers:
    assert 'step 2\n' in w.stdout, log
    assert 'finished all steps' not in w.stdout, log
  return workers, log


def _assert_stopped_by_jax(worker, log):
  """JAX's coordination service terminated `worker` (SIGABRT) with its
  'another task died' message."""
  assert worker.returncode != 0, log
  assert 'detected fatal errors' in worker.stderr or (
      'another task died' in worker.stderr), log


def test_killed_process_stops_the_other():
  workers, log = _run_failure('kill')
  assert workers[1].returncode == -9, log
  # Process 0 was waiting in an all-reduce: the missed heartbeats end it.
  _assert_stopped_by_jax(workers[0], log)
  assert workers[0].seconds < workers[1].seconds + 12 * HEARTBEAT, log


def test_uncaught_exception_exits_at_once_and_stops_the_other():
  workers, log = _run_failure('raise')
  # fail_fast: status 1 right away instead of waiting in JAX's shutdown
  # barrier (300 s) while still sending heartbeats.
  assert workers[1].returncode == 1, log
  assert 'RuntimeError: process 1 fails on purpose' in workers[1].stderr
  assert ('flaxish.distributed: process 1 of 2 stopped on an uncaught '
          'RuntimeError' in workers[1].stderr), log
  _assert_stopped_by_jax(workers[0], log)
  assert workers[0].seconds < workers[1].seconds + 12 * HEARTBEAT, log


def test_watchdog_ends_a_process_waiting_for_a_stuck_one():
  workers, log = _run_failure('stall')
  # Process 1 sleeps but sends heartbeats: only the watchdog notices.
  assert workers[0].returncode == 75, log
  stderr = workers[0].stderr
  assert ('flaxish.distributed.Watchdog: process 0 of 2: no all-reduce step '
          'finished in the last 3 s; the last one to finish was all-reduce '
          'step 2' in stderr), log
  assert '_failure_worker.py' in stderr.split('Threads of this process')[1]
  # With the coordinator (process 0) gone, process 1 is terminated too.
  _assert_stopped_by_jax(workers[1], log)


def test_initialize_watchdog_ends_the_run_when_a_process_stalls():
  workers, log = _run_failure('stall-default')
  # Process 1 sleeps, process 0 waits in an all-reduce: neither main thread
  # uses CPU time, so initialize's watchdog (8 s here) ends them.
  fired = [w for w in workers if w.returncode == 75]
  assert fired, log
  for w in fired:
    assert (f'flaxish.distributed.Watchdog: process {w.process_id} of 2: its '
            'main thread used no CPU time for 8 s (blocked or asleep). '
            'Either another process died or is stuck' in w.stderr), log
  for w in workers:
    if w.returncode != 75:
      _assert_stopped_by_jax(w, log)


# Start-up: the pre-flight check of initialize().

ADDRESS = r'127\.0\.0\.1:\d+'


def _start(mode, num_processes, timeout=3, **env):
  workers = _launch.run_workers('_init_worker.py', [mode, str(timeout)],
                                num_processes=num_processes,
                                timeout=FAILURE_TIMEOUT, extra_env=env)
  log = _launch.logs(workers)
  assert all(w.returncode is not None for w in workers), log
  return workers, log


def test_a_process_that_never_joins_is_named():
  (worker,), log = _start('alone', 1, FLAXISH_NUM_PROCESSES='2')
  assert worker.returncode == 3, log
  assert re.search(
      rf'InitializationError: flaxish.distributed.initialize \(process 0 of '
      rf'2, coordinator {ADDRESS}, timeout 3 s\): timed out at {ADDRESS}: 1 '
      r'of 2 processes joined; process\(es\) \[1\] never connected',
      worker.stdout), log
  progress = re.findall(rf'(INFO|WARNING) flaxish.distributed: process 0 '
                        rf'waits at {ADDRESS}: 1 of 2 processes joined '
                        r'\(missing: \[1\]\)', worker.stderr)
  assert progress[0] == 'INFO' and 'WARNING' in progress[1:], log


def test_an_unreachable_coordinator_is_named():
  (worker,), log = _start('alone', 1, FLAXISH_NUM_PROCESSES='2',
                          FLAXISH_PROCESS_ID='1')
  assert worker.returncode == 3, log
  assert re.search(
      rf'InitializationError: flaxish.distributed.initialize \(process 1 of '
      rf'2, coordinator {ADDRESS}, timeout 3 s\): cannot reach the '
      rf'coordinator at {ADDRESS} \(process 0\): \[Errno 111\] Connection '
      r'refused\. Check that process 0 runs', worker.stdout), log
  progress = re.findall(rf'(INFO|WARNING) flaxish.distributed: process 1 of 2 '
                        rf'waits for the coordinator at {ADDRESS} \(process '
                        r'0\): ', worker.stderr)
  assert progress[0] == 'INFO' and 'WARNING' in progress[1:], log


def test_processes_that_disagree_on_the_count_are_refused():
  workers, log = _start('disagree', 2, timeout=60)
  assert [w.returncode for w in workers] == [3, 3], log
  problem = re.escape('process 1 was started with num_processes=3, process 0 '
                      'with num_processes=2; start every process with the '
                      'same count')
  for w, n in zip(workers, (2, 3)):
    assert re.search(
        rf'InitializationError: flaxish.distributed.initialize \(process '
        rf'{w.process_id} of {n}, coordinator {ADDRESS}, timeout 60 s\): '
        rf'{problem}', w.stdout), log
