"""Worker of test_multiprocess's failure tests: process 1 fails mid-run.

    python _failure_worker.py MODE HEARTBEAT_SECONDS

Both processes run a jitted cross-process all-reduce, one step at a time.
At step 3 process 1 fails according to MODE:

  kill   SIGKILLs itself;
  raise  raises an uncaught RuntimeError;
  stall  sleeps (alive, still sending heartbeats) for 10 minutes;
  stall-default  the same, with `initialize`'s watchdog (8 s) on.

Process 0 goes on and waits in its next all-reduce. With MODE=stall it runs
a `Watchdog` of 3 s. Only MODE=stall-default has `initialize`'s own
watchdog. Each process prints 'step N' after each finished step.
"""
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from flaxish import distributed

FAILING_STEP = 3
WATCHDOG_SECONDS = 3
DEFAULT_WATCHDOG_SECONDS = 8


def main(mode, heartbeat):
  distributed.initialize(
      initialization_timeout=60, heartbeat_timeout_seconds=int(heartbeat),
      watchdog_timeout_s=DEFAULT_WATCHDOG_SECONDS if mode == 'stall-default'
      else None)
  mesh = distributed.data_parallel_mesh()
  me = jax.process_index()
  local = np.full((jax.local_device_count(), 2), me + 1, np.float32)
  x = distributed.global_batch(local, mesh)
  total = jax.jit(jnp.sum,
                  out_shardings=distributed.replicated_sharding(mesh))
  float(total(x))  # compiled and connected before the watchdog starts
  watchdog = None
  if mode == 'stall' and me == 0:
    watchdog = distributed.Watchdog(WATCHDOG_SECONDS, what='all-reduce step')
  for step in range(1000):
    if me == 1 and step == FAILING_STEP:
      if mode == 'kill':
        os.kill(os.getpid(), signal.SIGKILL)
      elif mode == 'raise':
        raise RuntimeError('process 1 fails on purpose')
      elif mode in ('stall', 'stall-default'):
        time.sleep(600)
    float(total(x))  # waits for every process
    print(f'step {step}', flush=True)
    if watchdog:
      watchdog.ping(step)
  print('finished all steps: the failure went unnoticed', flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
