"""exit_on_uncaught_exception and Watchdog. What ends a process runs in a
subprocess; test_multiprocess has a watchdog stopping a real two-process
run."""
import subprocess
import sys
import textwrap
import time

import pytest

from flaxish import distributed
from tests.distributed import _launch


def _run(code):
  return subprocess.run(
      [sys.executable, '-c', textwrap.dedent(code)], cwd=_launch.REPO,
      env=_launch.plain_env(), capture_output=True, text=True,
      timeout=120)


def test_uncaught_exception_exits_at_once():
  result = _run("""
      import atexit
      from flaxish import distributed
      distributed.exit_on_uncaught_exception(exit_code=3)
      distributed.exit_on_uncaught_exception()  # installed once only
      atexit.register(lambda: print('atexit ran'))
      print('before', flush=True)
      raise KeyError('boom')
  """)
  assert result.returncode == 3, result
  assert result.stdout == 'before\n'  # no atexit handler ran
  assert "KeyError: 'boom'" in result.stderr  # the usual traceback
  assert result.stderr.count('stopped on an uncaught KeyError; exiting now '
                             '(status 3) without waiting for the other '
                             'processes, so that they stop too.') == 1


def test_watchdog_ends_a_process_whose_first_step_never_finishes():
  start = time.monotonic()
  result = _run("""
      import time
      from flaxish import distributed
      distributed.Watchdog(0.5, what='epoch')
      time.sleep(60)
  """)
  assert result.returncode == distributed.WATCHDOG_EXIT_CODE, result
  assert time.monotonic() - start < 60
  assert ('flaxish.distributed.Watchdog: process 0 of 1: the first epoch did '
          'not finish within 0.5 s.' in result.stderr), result.stderr
  assert 'time.sleep(60)' not in result.stderr  # a stack, not the source
  assert 'line 5 in <module>' in result.stderr


def test_watchdog_stays_quiet_while_pinged():
  with distributed.Watchdog(30, first_timeout_s=60) as watchdog:
    for step in range(3):
      watchdog.ping(step)
  assert not watchdog._thread.is_alive()  # pylint: disable=protected-access
  assert watchdog.first_timeout_s == 60 and watchdog.timeout_s == 30


@pytest.mark.parametrize('kwargs', [{'timeout_s': 0},
                                    {'timeout_s': 1, 'first_timeout_s': -1}])
def test_watchdog_rejects_bad_timeouts(kwargs):
  with pytest.raises(ValueError, match='must be > 0 seconds'):
    distributed.Watchdog(**kwargs)


def test_main_thread_cpu_watchdog_fires_only_when_the_main_thread_blocks():
  # Busy for 3 s with a 1 s watchdog and no pings: CPU time counts as life.
  busy = _run("""
      import time
      from flaxish import distributed
      watchdog = distributed.Watchdog(1, main_thread_cpu=True)
      end = time.monotonic() + 3
      while time.monotonic() < end:
        sum(range(1000))
      watchdog.close()
      print('finished')
  """)
  assert busy.returncode == 0 and busy.stdout == 'finished\n', busy
  blocked = _run("""
      import threading
      from flaxish import distributed
      distributed.Watchdog(1, main_thread_cpu=True)
      threading.Event().wait(60)  # blocked, as in a collective
  """)
  assert blocked.returncode == distributed.WATCHDOG_EXIT_CODE, blocked
  assert ('flaxish.distributed.Watchdog: process 0 of 1: its main thread used '
          'no CPU time for 1 s (blocked or asleep).' in blocked.stderr)
  assert 'line 5 in <module>' in blocked.stderr
