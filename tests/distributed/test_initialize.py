"""initialize(): where the values come from, when it does nothing, errors.

`jax.distributed.initialize` is replaced by a recorder: the pytest process
must never join a distributed run (test_multiprocess starts real ones).
"""
import importlib

import jax
import pytest

from flaxish import distributed

init_module = importlib.import_module('flaxish.distributed.initialize')

_CLEARED = ('FLAXISH_', 'JAX_COORDINATOR', 'JAX_NUM_PROCESSES',
            'JAX_PROCESS_ID', 'SLURM_', 'OMPI_', 'KUBERNETES_SERVICE_HOST',
            'JOB_COMPLETION_INDEX', 'TPU_WORKER_HOSTNAMES')


class Recorder:
  """Stands in for jax.distributed.initialize and the fail-fast hook."""

  def __init__(self):
    self.calls = []
    self.hooks = 0
    self.initialized = False
    self.rendezvous_calls, self.watchdogs = [], []

  def initialize(self, **kwargs):
    self.calls.append(kwargs)
    self.initialized = True

  def install_hook(self):
    self.hooks += 1

  def rendezvous(self, *args):
    self.rendezvous_calls.append(args)

  def watchdog(self, timeout_s, **kwargs):
    self.watchdogs.append((timeout_s, kwargs))


@pytest.fixture
def fake(monkeypatch):
  import os  # pylint: disable=g-import-not-at-top
  for name in list(os.environ):
    if name.startswith(_CLEARED):
      monkeypatch.delenv(name)
  rec = Recorder()
  monkeypatch.setattr(jax.distributed, 'initialize', rec.initialize)
  monkeypatch.setattr(jax.distributed, 'is_initialized',
                      lambda: rec.initialized)
  monkeypatch.setattr(init_module._fail_fast, 'exit_on_uncaught_exception',
                      rec.install_hook)
  monkeypatch.setattr(init_module._rendezvous, 'rendezvous', rec.rendezvous)
  monkeypatch.setattr(init_module._fail_fast, 'Watchdog', rec.watchdog)
  monkeypatch.setattr(init_module, '_watchdog', [])
  return rec


def _slurm(monkeypatch, ntasks):
  for name, value in {'SLURM_JOB_ID': '42', 'SLURM_STEP_NODELIST': 'node[1-4]',
                      'SLURM_NTASKS': str(ntasks), 'SLURM_PROCID': '2',
                      'SLURM_LOCALID': '0'}.items():
    monkeypatch.setenv(name, value)


def test_nothing_given_is_a_single_process_noop(fake):
  assert distributed.initialize() is False
  assert fake.calls == [] and fake.hooks == 0


def test_arguments(fake):
  assert distributed.initialize('10.0.0.1:1234', 4, 3) is True
  assert fake.calls == [{'coordinator_address': '10.0.0.1:1234',
                         'num_processes': 4, 'process_id': 3}]
  assert fake.hooks == 1


def test_flaxish_env_then_jax_env_and_arguments_win(fake, monkeypatch):
  monkeypatch.setenv('FLAXISH_COORDINATOR_ADDRESS', 'host0:99')
  monkeypatch.setenv('JAX_COORDINATOR_ADDRESS', 'ignored:1')
  monkeypatch.setenv('JAX_NUM_PROCESSES', '2')
  monkeypatch.setenv('FLAXISH_PROCESS_ID', ' 1 ')
  assert distributed.initialize() is True
  assert fake.calls[-1] == {'coordinator_address': 'host0:99',
                            'num_processes': 2, 'process_id': 1}
  fake.initialized = False
  distributed.initialize(coordinator_address='[::1]:5', process_id=0)
  assert fake.calls[-1] == {'coordinator_address': '[::1]:5',
                            'num_processes': 2, 'process_id': 0}


def test_a_lone_process_id_zero_is_a_single_process(fake):
  assert distributed.initialize(process_id=0) is False
  with pytest.raises(ValueError, match='got process_id'):
    distributed.initialize(process_id=1)
  assert fake.calls == []


def test_one_process_is_a_noop(fake, monkeypatch):
  monkeypatch.setenv('FLAXISH_COORDINATOR_ADDRESS', 'host0:99')
  assert distributed.initialize(num_processes=1, process_id=0) is False
  assert fake.calls == []


def test_timeouts_and_device_ids_are_passed_on(fake):
  distributed.initialize('h:1', 2, 0, local_device_ids=[0],
                         heartbeat_timeout_seconds=7,
                         initialization_timeout=30)
  assert fake.calls == [{'coordinator_address': 'h:1', 'num_processes': 2,
                         'process_id': 0, 'local_device_ids': [0],
                         'heartbeat_timeout_seconds': 7,
                         'initialization_timeout': 30}]


def test_fail_fast_false_installs_no_hook(fake):
  distributed.initialize('h:1', 2, 0, fail_fast=False)
  assert fake.hooks == 0


def test_second_call_is_a_noop(fake, monkeypatch):
  distributed.initialize('h:1', 2, 1)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  assert distributed.initialize() is True
  assert distributed.initialize('h:1', 2, 1) is True
  assert len(fake.calls) == 1
  with pytest.raises(ValueError, match='already running as process 1 of 2, '
                     'but this call asks for process 0 of 2'):
    distributed.initialize('h:1', 2, 0)


def test_partial_configuration_names_what_is_missing(fake, monkeypatch):
  monkeypatch.setenv('FLAXISH_NUM_PROCESSES', '2')
  with pytest.raises(ValueError) as e:
    distributed.initialize()
  assert str(e.value) == (
      'flaxish.distributed.initialize: got num_processes (from '
      'FLAXISH_NUM_PROCESSES) but not coordinator_address (or '
      'FLAXISH_COORDINATOR_ADDRESS) and process_id (or FLAXISH_PROCESS_ID). '
      'Pass or set all three on every process, or none of them to run as a '
      'single process.')
  assert fake.calls == []


@pytest.mark.parametrize('env, kwargs, message', [
    ({'FLAXISH_NUM_PROCESSES': 'two'}, {},
     "FLAXISH_NUM_PROCESSES='two' is not an int"),
    ({}, {'coordinator_address': 'h:1', 'num_processes': 2,
          'process_id': 2},
     r'process_id=2 \(from the argument process_id\) must be an int in '
     r'\[0, num_processes\) with num_processes=2'),
    ({'FLAXISH_NUM_PROCESSES': '0'}, {},
     r'num_processes=0 \(from FLAXISH_NUM_PROCESSES\) must be an int >= 1'),
    ({'FLAXISH_COORDINATOR_ADDRESS': 'localhost'}, {},
     r"coordinator_address='localhost' \(from FLAXISH_COORDINATOR_ADDRESS\) "
     r'must be "HOST:PORT" of process 0'),
])
def test_invalid_values(fake, monkeypatch, env, kwargs, message):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ValueError, match=message):
    distributed.initialize(**kwargs)
  assert fake.calls == []


def test_slurm_is_left_to_jax_auto_detection(fake, monkeypatch):
  _slurm(monkeypatch, 4)
  assert distributed.detect_launcher() == 'Slurm (4 tasks)'
  monkeypatch.setattr(jax, 'process_count', lambda: 4)
  monkeypatch.setattr(jax, 'process_index', lambda: 2)
  assert distributed.initialize(heartbeat_timeout_seconds=9) is True
  assert fake.calls == [{'heartbeat_timeout_seconds': 9}]
  assert fake.hooks == 1


def test_slurm_with_an_explicit_coordinator(fake, monkeypatch):
  _slurm(monkeypatch, 4)
  monkeypatch.setattr(jax, 'process_count', lambda: 4)
  monkeypatch.setattr(jax, 'process_index', lambda: 2)
  monkeypatch.setenv('FLAXISH_COORDINATOR_ADDRESS', 'node1:6000')
  distributed.initialize()
  assert fake.calls == [{'coordinator_address': 'node1:6000'}]


def test_single_task_slurm_and_detection_off_stay_single(fake, monkeypatch):
  _slurm(monkeypatch, 1)
  assert distributed.detect_launcher() is None
  assert distributed.initialize() is False
  _slurm(monkeypatch, 4)
  assert distributed.initialize(cluster_detection='off') is False
  assert fake.calls == []


def test_explicit_detection_method_goes_to_jax(fake, monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 1)
  monkeypatch.setattr(jax, 'process_index', lambda: 0)
  assert distributed.initialize(cluster_detection='mpi4py') is False
  assert fake.calls == [{'cluster_detection_method': 'mpi4py'}]


def test_detection_off_with_all_values_deactivates_jax_detection(fake):
  distributed.initialize('h:1', 2, 0, cluster_detection='off')
  assert fake.calls[0]['cluster_detection_method'] == 'deactivate'


def test_other_launchers_are_detected(fake, monkeypatch):
  monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '8')
  monkeypatch.setenv('OMPI_MCA_orte_hnp_uri', '123.0;tcp://10.0.0.1:5000')
  assert distributed.detect_launcher() == 'Open MPI (8 ranks)'
  monkeypatch.delenv('OMPI_COMM_WORLD_SIZE')
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'tpu-0,tpu-1')
  assert distributed.detect_launcher() == 'multi-host Cloud TPU'


def test_called_too_late(fake, monkeypatch):
  def late(**kwargs):
    raise RuntimeError('jax.distributed.initialize() must be called before '
                       'any JAX calls that might initialise the XLA backend.')
  monkeypatch.setattr(jax.distributed, 'initialize', late)
  with pytest.raises(RuntimeError, match='must run before anything uses JAX '
                     'devices .* call it first thing in main'):
    distributed.initialize('h:1', 2, 0)


def test_pre_flight_check_and_watchdog_for_several_processes(fake):
  assert distributed.initialize('h:1', 2, 1) is True
  assert fake.rendezvous_calls == [('h:1', 2, 1, 300)]
  assert fake.watchdogs == [(distributed.DEFAULT_WATCHDOG_SECONDS, {
      'what': 'main thread', 'main_thread_cpu': True})]
  assert distributed.DEFAULT_WATCHDOG_SECONDS == 1800


@pytest.mark.parametrize('off', [None, 0])
def test_the_watchdog_can_be_turned_off(fake, off):
  distributed.initialize('h:1', 2, 0, initialization_timeout=20,
                         watchdog_timeout_s=off)
  assert fake.rendezvous_calls == [('h:1', 2, 0, 20)] and not fake.watchdogs


def test_no_pre_flight_check_without_all_three_values(fake, monkeypatch):
  _slurm(monkeypatch, 4)
  monkeypatch.setattr(jax, 'process_count', lambda: 4)
  monkeypatch.setattr(jax, 'process_index', lambda: 2)
  distributed.initialize(watchdog_timeout_s=60)
  assert fake.rendezvous_calls == [] and fake.watchdogs[0][0] == 60
