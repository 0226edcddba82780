"""Starting a multi-process run: `initialize()` from arguments or environment.

Values come from the arguments, else `FLAXISH_*`, else `JAX_*` variables,
else JAX's cluster detection under a detected launcher. See
docs/distributed.md.
"""
import logging
import os
import re
import time
from typing import Optional, Sequence, Union

import jax

from flaxish.distributed import fail_fast as _fail_fast
from flaxish.distributed import rendezvous as _rendezvous

__all__ = ['initialize', 'detect_launcher', 'ENV_COORDINATOR_ADDRESS',
           'ENV_NUM_PROCESSES', 'ENV_PROCESS_ID', 'DEFAULT_WATCHDOG_SECONDS']

_log = logging.getLogger(__name__)

ENV_COORDINATOR_ADDRESS = 'FLAXISH_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'FLAXISH_NUM_PROCESSES'
ENV_PROCESS_ID = 'FLAXISH_PROCESS_ID'

_ENV = {'coordinator_address': (ENV_COORDINATOR_ADDRESS,
                                'JAX_COORDINATOR_ADDRESS'),
        'num_processes': (ENV_NUM_PROCESSES, 'JAX_NUM_PROCESSES'),
        'process_id': (ENV_PROCESS_ID, 'JAX_PROCESS_ID')}
_ADDRESS_RE = re.compile(r'^(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):(\d{1,5})$')
_DETECTION_VALUES = ('auto', 'jax', 'off')
DEFAULT_WATCHDOG_SECONDS = 1800.0
_watchdog = []  # the one started by initialize


def _int_env(name: str) -> int:
  raw = os.environ.get(name, '').strip()
  return int(raw) if raw.isdigit() else 0


def detect_launcher() -> Optional[str]:
  """The multi-process launcher seen in the environment, or None: Slurm or
  Open MPI with several tasks, a Kubernetes Indexed Job (if `kubernetes`
  imports), a multi-host Cloud TPU (`TPU_WORKER_HOSTNAMES`)."""
  env = os.environ
  if _int_env('SLURM_NTASKS') > 1 and all(
      k in env for k in ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID',
                         'SLURM_LOCALID')):
    return f'Slurm ({env["SLURM_NTASKS"]} tasks)'
  if _int_env('OMPI_COMM_WORLD_SIZE') > 1 and (
      'OMPI_MCA_orte_hnp_uri' in env):
    return f'Open MPI ({env["OMPI_COMM_WORLD_SIZE"]} ranks)'
  if 'KUBERNETES_SERVICE_HOST' in env and 'JOB_COMPLETION_INDEX' in env:
    try:
      import kubernetes  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      _log.warning('Kubernetes Indexed Job detected but the `kubernetes` '
                   'package is missing, so JAX cannot find the other pods; '
                   'set %s, %s and %s instead (docs/distributed.md)',
                   ENV_COORDINATOR_ADDRESS, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
      return None
    return 'Kubernetes Indexed Job'
  if ',' in env.get('TPU_WORKER_HOSTNAMES', ''):
    return 'multi-host Cloud TPU'
  return None


def _resolve(name: str, value, parse, what: str):
  """`(value, source)` from the argument or the first set env variable."""
  if value is not None:
    return value, f'the argument {name}'
  for var in _ENV[name]:
    raw = os.environ.get(var, '').strip()
    if raw:
      try:
        return parse(raw), var
      except ValueError:
        raise ValueError(f'flaxish.distributed.initialize: {var}={raw!r} is '
                         f'not {what}') from None
  return None, None


def _check(coordinator_address, num_processes, process_id, sources) -> None:
  if num_processes is not None and (
      not isinstance(num_processes, int) or num_processes < 1):
    raise ValueError(f'flaxish.distributed.initialize: num_processes='
                     f'{num_processes!r} (from {sources[1]}) must be an int '
                     '>= 1')
  if process_id is not None and (
      not isinstance(process_id, int) or process_id < 0 or
      (num_processes is not None and process_id >= num_processes)):
    raise ValueError(
        f'flaxish.distributed.initialize: process_id={process_id!r} (from '
        f'{sources[2]}) must be an int in [0, num_processes) with '
        f'num_processes={num_processes!r}; number the processes 0, 1, ..., '
        'num_processes - 1')
  if coordinator_address is not None and not (
      isinstance(coordinator_address, str) and
      _ADDRESS_RE.match(coordinator_address)):
    raise ValueError(
        f'flaxish.distributed.initialize: coordinator_address='
        f'{coordinator_address!r} (from {sources[0]}) must be "HOST:PORT" '
        'of process 0, e.g. "10.0.0.1:1234" or "node001:1234"')


def _already_initialized(num_processes, process_id) -> bool:
  count, index = jax.process_count(), jax.process_index()
  if num_processes is not None and num_processes != count or (
      process_id is not None and process_id != index):
    raise ValueError(
        f'flaxish.distributed.initialize: JAX is already running as process '
        f'{index} of {count}, but this call asks for process '
        f'{index if process_id is None else process_id} of '
        f'{count if num_processes is None else num_processes}')
  return count > 1


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *,
               local_device_ids: Optional[Union[int, Sequence[int]]] = None,
               cluster_detection: str = 'auto',
               initialization_timeout: Optional[int] = None,
               heartbeat_timeout_seconds: Optional[int] = None,
               shutdown_timeout_seconds: Optional[int] = None,
               fail_fast: bool = True,
               watchdog_timeout_s: Optional[float] = DEFAULT_WATCHDOG_SECONDS
               ) -> bool:
  """Joins the multi-process JAX run this process belongs to, if any; call it
  before anything touches JAX devices.

  Arguments:
    coordinator_address: `"HOST:PORT"` of process 0 (the same everywhere).
    num_processes: how many processes take part (1: nothing to do).
    process_id: this process's index in `[0, num_processes)`.
    local_device_ids: the local devices to use (default: all).
    cluster_detection: when none of the three is given anywhere: `'auto'`
      (default) runs JAX's cluster detection only under a detected launcher
      (`detect_launcher`); `'jax'` always; `'off'` never; other values are a
      JAX `cluster_detection_method` (`'slurm'`, `'mpi4py'`, ...).
    initialization_timeout: seconds to wait for all processes (default 300).
    heartbeat_timeout_seconds: a process silent this long is declared dead
      and the others are terminated (default: JAX's, 100).
    shutdown_timeout_seconds: how long a finishing process waits for the
      others at exit (default: JAX's, 300).
    fail_fast: make an uncaught exception end this process at once (default
      True; several processes only).
    watchdog_timeout_s: with several processes, end this process (status 75,
      with every thread's stack) when its main thread used no CPU time this
      long (default `DEFAULT_WATCHDOG_SECONDS`, 1800; None or 0: off).
  Returns:
    True if this process is part of a run of several processes.
  Raises:
    ValueError: a value is missing or invalid (the message says where each
      came from and what to set).
    InitializationError: a process did not join in time, or the processes
      disagree on `num_processes`.
    RuntimeError: JAX's devices were already in use before this call.
  """
  cluster_detection = cluster_detection or 'off'
  coordinator_address, address_src = _resolve(
      'coordinator_address', coordinator_address, str, 'HOST:PORT')
  num_processes, num_src = _resolve('num_processes', num_processes, int,
                                    'an int')
  process_id, id_src = _resolve('process_id', process_id, int, 'an int')
  _check(coordinator_address, num_processes, process_id,
         (address_src, num_src, id_src))

  if jax.distributed.is_initialized():
    return _already_initialized(num_processes, process_id)
  if num_processes == 1:
    return False

  kwargs = {}
  values = {'coordinator_address': coordinator_address,
            'num_processes': num_processes, 'process_id': process_id}
  missing = [name for name, value in values.items() if value is None]
  if missing:
    launcher = detect_launcher()
    # Nothing asks for several processes (a lone process_id=0 does not).
    alone = (coordinator_address is None and num_processes is None and
             process_id in (None, 0))
    if alone and (cluster_detection == 'off' or (
        cluster_detection == 'auto' and not launcher)):
      return False
    if cluster_detection not in _DETECTION_VALUES:
      kwargs['cluster_detection_method'] = cluster_detection
    elif cluster_detection == 'off' or (
        cluster_detection == 'auto' and not launcher):
      given = ', '.join(f'{name} (from {src})' for name, src in
                        zip(values, (address_src, num_src, id_src))
                        if src is not None)
      wanted = ' and '.join(f'{name} (or {_ENV[name][0]})'
                            for name in missing)
      raise ValueError(
          f'flaxish.distributed.initialize: got {given} but not {wanted}. '
          'Pass or set all three on every process, or none of them to run '
          'as a single process.')
  if cluster_detection == 'off':
    kwargs['cluster_detection_method'] = 'deactivate'
  kwargs.update({k: v for k, v in dict(
      values, local_device_ids=local_device_ids,
      initialization_timeout=initialization_timeout,
      heartbeat_timeout_seconds=heartbeat_timeout_seconds,
      shutdown_timeout_seconds=shutdown_timeout_seconds).items()
                 if v is not None})
  if not missing:
    _rendezvous.rendezvous(coordinator_address, num_processes, process_id,
                           initialization_timeout or 300)
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as e:
    if 'must be called before' in str(e):
      raise RuntimeError(
          'flaxish.distributed.initialize must run before anything uses JAX '
          'devices (jax.devices(), creating arrays, jit calls, '
          'jax.process_index()); call it first thing in main().') from e
    raise
  # With the count given, leave the backend alone (JAX is not set up yet).
  count = num_processes if num_processes is not None else jax.process_count()
  _log.info('flaxish.distributed: process %s of %d, coordinator %s',
            process_id if process_id is not None else jax.process_index(),
            count, coordinator_address or 'auto-detected')
  if fail_fast and count > 1:
    _fail_fast.exit_on_uncaught_exception()
  if watchdog_timeout_s and count > 1 and not _watchdog and hasattr(
      time, 'pthread_getcpuclockid'):  # POSIX but macOS
    _watchdog.append(_fail_fast.Watchdog(
        watchdog_timeout_s, what='main thread', main_thread_cpu=True))
  return count > 1
