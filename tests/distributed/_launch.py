"""Starts worker processes on 127.0.0.1 for the multi-process tests.

Each worker runs `python <script> <args>` from the repository root with 4
fake CPU devices, `FLAXISH_COORDINATOR_ADDRESS` on a free port,
`FLAXISH_NUM_PROCESSES` and `FLAXISH_PROCESS_ID`. A run that outlives its
timeout is killed, every worker with it.
"""
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
DEVICES_PER_PROCESS = 4


@dataclasses.dataclass
class Worker:
  process_id: int
  returncode: Optional[int]
  stdout: str
  stderr: str
  seconds: float  # from the start of the run until this worker ended

  def log(self) -> str:
    return (f'--- worker {self.process_id}: returncode {self.returncode} '
            f'after {self.seconds:.1f} s\n--- stdout:\n{self.stdout}\n'
            f'--- stderr (last 4000 chars):\n{self.stderr[-4000:]}')


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def plain_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  """This environment without launcher variables, plus 4 fake CPU devices
  and the repository on PYTHONPATH."""
  env = dict(os.environ)
  for name in list(env):
    if name.startswith(('SLURM_', 'OMPI_', 'FLAXISH_', 'JAX_COORDINATOR',
                        'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID',
                        'KUBERNETES_SERVICE_HOST', 'JOB_COMPLETION_INDEX',
                        'TPU_WORKER_HOSTNAMES')):
      del env[name]
  env.update({
      'XLA_FLAGS': f'--xla_force_host_platform_device_count='
                   f'{DEVICES_PER_PROCESS}',
      'JAX_PLATFORMS': 'cpu',
      'PYTHONPATH': REPO + os.pathsep + env.get('PYTHONPATH', ''),
      'PYTHONUNBUFFERED': '1',
  })
  env.update(extra or {})
  return env


def worker_env(process_id: int, num_processes: int, port: int,
               extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
  env = plain_env({
      'FLAXISH_COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
      'FLAXISH_NUM_PROCESSES': str(num_processes),
      'FLAXISH_PROCESS_ID': str(process_id),
  })
  env.update(extra or {})
  return env


def run_workers(script: str, args: Sequence[str], num_processes: int = 2,
                timeout: float = 120.,
                extra_env: Optional[Dict[str, str]] = None) -> List[Worker]:
  """Runs `num_processes` workers of `script` (a file in this directory)
  and waits for all of them, at most `timeout` seconds in all."""
  port = free_port()
  start = time.monotonic()
  procs, files = [], []
  with tempfile.TemporaryDirectory() as tmp:
    for i in range(num_processes):
      out = open(os.path.join(tmp, f'{i}.out'), 'w+')
      err = open(os.path.join(tmp, f'{i}.err'), 'w+')
      files.append((out, err))
      procs.append(subprocess.Popen(
          [sys.executable, os.path.join(HERE, script), *args],
          cwd=REPO, env=worker_env(i, num_processes, port, extra_env),
          stdout=out, stderr=err, start_new_session=True))
    ended: Dict[int, float] = {}
    try:
      while len(ended) < len(procs):
        for i, p in enumerate(procs):
          if i not in ended and p.poll() is not None:
            ended[i] = time.monotonic() - start
        if time.monotonic() - start > timeout:
          break
        time.sleep(0.05)
    finally:
      for p in procs:
        if p.poll() is None:
          os.killpg(p.pid, signal.SIGKILL)  # the worker's own group
          p.wait()
    workers = []
    for i, (out, err) in enumerate(files):
      texts = []
      for f in (out, err):
        f.seek(0)
        texts.append(f.read())
        f.close()
      workers.append(Worker(i, procs[i].returncode if i in ended else None,
                            texts[0], texts[1],
                            ended.get(i, time.monotonic() - start)))
  return workers


def logs(workers: Sequence[Worker]) -> str:
  return '\n'.join(w.log() for w in workers)
