"""Worker of test_multiprocess's start-up tests: `initialize()` and report.

    python _init_worker.py MODE TIMEOUT

MODE 'disagree': process 1 is told num_processes=3 (the others 2). Logs
go to stderr at level INFO; the pre-flight check logs every 0.5 s.
"""
import logging
import os
import sys

from flaxish import distributed
from flaxish.distributed import rendezvous


def main(mode, timeout):
  logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')
  rendezvous.PROGRESS_SECONDS = 0.5
  if mode == 'disagree' and os.environ['FLAXISH_PROCESS_ID'] == '1':
    os.environ['FLAXISH_NUM_PROCESSES'] = '3'
  try:
    distributed.initialize(initialization_timeout=int(timeout))
  except distributed.InitializationError as e:
    print(f'InitializationError: {e}', flush=True)
    sys.exit(3)
  import jax  # pylint: disable=g-import-not-at-top
  print(f'joined as process {jax.process_index()} of {jax.process_count()}',
        flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
