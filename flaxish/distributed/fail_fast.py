"""A dead or stuck process must stop the whole run, not hang it.

Every step ends in collectives that wait for every process. A process that
is killed stops sending heartbeats, and JAX's coordination service ends the
others after `heartbeat_timeout_seconds`. `exit_on_uncaught_exception`
(installed by `initialize`) turns an uncaught exception into that case
instead of a wait in JAX's shutdown barrier. A process that is alive but
stuck goes on sending heartbeats: a `Watchdog` ends it, and the processes
waiting for it. `initialize` starts one for multi-process runs that fires
when the main thread used no CPU time for `watchdog_timeout_s` (it is
blocked: in a collective that waits for another process, or stuck).
"""
import faulthandler
import os
import sys
import threading
import time
from typing import Any, Optional

__all__ = ['exit_on_uncaught_exception', 'Watchdog', 'WATCHDOG_EXIT_CODE']

WATCHDOG_EXIT_CODE = 75  # EX_TEMPFAIL: the run may succeed if restarted.

_HOOK_MARK = '_flaxish_exit_on_uncaught_exception'


def _process_desc() -> str:
  """'process I of N' if JAX's backend is up, else 'this process'."""
  try:
    import jax  # pylint: disable=g-import-not-at-top
    return f'process {jax.process_index()} of {jax.process_count()}'
  except Exception:  # pylint: disable=broad-except
    return 'this process'


def _write_stderr(text: str) -> None:
  try:
    sys.stderr.write(text)
    sys.stderr.flush()
  except Exception:  # pylint: disable=broad-except
    os.write(2, text.encode('utf-8', 'replace'))


def _flush_std() -> None:
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # pylint: disable=broad-except
      pass


def exit_on_uncaught_exception(exit_code: int = 1) -> None:
  """Makes an uncaught exception end this process at once.

  The installed `sys.excepthook` runs the previous hook (which prints the
  traceback), says why the process stops, flushes stdout/stderr and calls
  `os._exit(exit_code)`: `atexit` handlers, including JAX's shutdown
  barrier, do not run. Installing it twice is a no-op. `sys.exit()` is not
  an uncaught exception and still exits normally.

  Arguments:
    exit_code: the process's exit status (default 1, like Python's).
  """
  previous = sys.excepthook
  if getattr(previous, _HOOK_MARK, False):
    return

  def hook(exc_type, exc, tb):
    try:
      previous(exc_type, exc, tb)
      _write_stderr(
          f'flaxish.distributed: {_process_desc()} stopped on an uncaught '
          f'{exc_type.__name__}; exiting now (status {exit_code}) without '
          'waiting for the other processes, so that they stop too.\n')
      _flush_std()
    finally:
      os._exit(exit_code)  # pylint: disable=protected-access

  setattr(hook, _HOOK_MARK, True)
  sys.excepthook = hook


class Watchdog:
  """Ends this process when no step finishes for `timeout_s` seconds.

      watchdog = distributed.Watchdog(timeout_s=300, first_timeout_s=900)
      for step in range(num_steps):
        optimizer, metrics = train_step(optimizer, batch)
        loss = float(metrics['loss'])  # waits for the step
        watchdog.ping(step)
      watchdog.close()

  `ping` after the step's result is on the host (a dispatched step is not a
  finished one). When the time runs out, a background thread writes to
  stderr which process stalled, after which step, and the stack of every
  thread, then calls `os._exit(exit_code)`: a thread blocked in a collective
  cannot be interrupted any other way. Also a context manager (`close` on
  exit). Create it after `initialize()`.

  Arguments:
    timeout_s: the longest time allowed between two pings.
    first_timeout_s: the longest time before the first ping, which usually
      includes compilation (default: `timeout_s`).
    what: what a ping stands for, in the message (default 'training step').
    exit_code: the exit status (default `WATCHDOG_EXIT_CODE`, 75).
    main_thread_cpu: also count as a ping every 10 ms of CPU time the main
      thread used, so that it fires only when the main thread is blocked or
      asleep (default False; needs `time.pthread_getcpuclockid`).
  """

  def __init__(self, timeout_s: float, *,
               first_timeout_s: Optional[float] = None,
               what: str = 'training step',
               exit_code: int = WATCHDOG_EXIT_CODE,
               main_thread_cpu: bool = False):
    for name, value in (('timeout_s', timeout_s),
                        ('first_timeout_s', first_timeout_s)):
      if value is not None and not value > 0:
        raise ValueError(f'Watchdog: {name} must be > 0 seconds, got '
                         f'{value!r}')
    self.timeout_s = float(timeout_s)
    self.first_timeout_s = float(first_timeout_s or timeout_s)
    self.what = what
    self.exit_code = exit_code
    self._desc = _process_desc()
    self._lock = threading.Lock()
    self._start = time.monotonic()
    self._deadline = self._start + self.first_timeout_s
    self._last_step: Any = None
    self._pings = 0
    self._clock = time.pthread_getcpuclockid(
        threading.main_thread().ident) if main_thread_cpu else None
    self._cpu = time.clock_gettime(self._clock) if main_thread_cpu else 0.0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name='flaxish-watchdog')
    self._thread.start()

  def ping(self, step: Any = None) -> None:
    """Records that a step finished (`step`: its number, for the message)."""
    with self._lock:
      self._last_step = step
      self._pings += 1
      self._deadline = time.monotonic() + self.timeout_s

  def close(self) -> None:
    """Stops watching."""
    self._stop.set()
    self._thread.join()

  def __enter__(self) -> 'Watchdog':
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self.close()

  def _watch(self) -> None:
    while True:
      if self._clock is not None and (
          time.clock_gettime(self._clock) > self._cpu + 0.01):
        self._cpu = time.clock_gettime(self._clock)
        self.ping(self._last_step)
      with self._lock:
        remaining = self._deadline - time.monotonic()
      if remaining <= 0:
        self._fire()
      if self._stop.wait(min(remaining, 1.0)):
        return

  def _fire(self) -> None:
    with self._lock:
      pings, step = self._pings, self._last_step
    if self._clock is not None:
      where = (f'its main thread used no CPU time for {self.timeout_s:g} s '
               '(blocked or asleep)')
    elif pings and step is not None:
      where = (f'no {self.what} finished in the last {self.timeout_s:g} s; '
               f'the last one to finish was {self.what} {step}')
    elif pings:
      where = (f'no {self.what} finished in the last {self.timeout_s:g} s, '
               f'after {pings} did')
    else:
      where = (f'the first {self.what} did not finish within '
               f'{self.first_timeout_s:g} s')
    _write_stderr(
        f'\nflaxish.distributed.Watchdog: {self._desc}: {where}. Either '
        'another process died or is stuck and this one waits for it in a '
        'collective (check the other processes\' logs), or this process is '
        'stuck itself (see its threads below). Exiting with status '
        f'{self.exit_code}. Threads of this process:\n')
    try:
      faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    except Exception:  # pylint: disable=broad-except
      pass
    _flush_std()
    os._exit(self.exit_code)  # pylint: disable=protected-access
