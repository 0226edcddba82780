"""A dead or stuck process must stop the whole run, not hang it.

`exit_on_uncaught_exception` kills the process on an uncaught exception, so
JAX's heartbeats end the others; a `Watchdog` ends a stuck process.
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
  try:
    import jax  # pylint: disable=g-import-not-at-top
    return f'process {jax.process_index()} of {jax.process_count()}'
  except Exception:  # pylint: disable=broad-except
    return 'this process'


def _write_stderr(text: str) -> None:
  """Writes `text` to stderr and flushes stdout and stderr."""
  try:
    sys.stderr.write(text)
    sys.stdout.flush()
    sys.stderr.flush()
  except Exception:  # pylint: disable=broad-except
    os.write(2, text.encode('utf-8', 'replace'))


def exit_on_uncaught_exception(exit_code: int = 1) -> None:
  """Makes an uncaught exception end this process at once.

  The `sys.excepthook` installed runs the previous one (the traceback), says
  why the process stops and calls `os._exit(exit_code)` (default 1): no
  `atexit` handler, JAX's shutdown barrier included, runs. Installing it
  twice is a no-op; `sys.exit()` still exits normally.
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
    finally:
      os._exit(exit_code)  # pylint: disable=protected-access

  setattr(hook, _HOOK_MARK, True)
  sys.excepthook = hook


class Watchdog:
  """Ends this process when no step finishes for `timeout_s` seconds.

  Call `ping(step)` once the step's result is on the host. When the time
  runs out, it writes which process stalled, after which step, and every
  thread's stack to stderr and calls `os._exit(exit_code)` (default 75).
  `first_timeout_s` (default `timeout_s`) bounds the wait for the first ping
  (compilation); `what` names a ping in the message. With `main_thread_cpu`,
  each 10 ms of CPU time the main thread used counts as a ping too (needs
  `time.pthread_getcpuclockid`). Also a context manager.
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
    self.what, self.exit_code, self._desc = what, exit_code, _process_desc()
    self._lock = threading.Lock()
    self._deadline = time.monotonic() + self.first_timeout_s
    self._last_step, self._pings = None, 0
    self._clock = time.pthread_getcpuclockid(
        threading.main_thread().ident) if main_thread_cpu else None
    self._cpu = time.clock_gettime(self._clock) if main_thread_cpu else 0.0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True)
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
      sys.stderr.flush()
    finally:
      os._exit(self.exit_code)  # pylint: disable=protected-access
