"""Runs a benchmark step in a fresh Python process and reads its JSON result.

Used where a measurement needs a new process: XLA reads `XLA_FLAGS` once at
backend start (`bench_cpu_flags.py`), and peak memory must not include what
an earlier measurement left behind (`memory.py`).
"""
import json
import os
import subprocess
import sys
from typing import Any, Dict, Mapping, Sequence

__all__ = ['run_module']

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, args: Sequence[str], env: Mapping[str, str],
               timeout: float) -> Dict[str, Any]:
  """`python -m module *args` in the repository, with environment `env`
  (the repository is put first on PYTHONPATH).

  Returns:
    The last line of its stdout that starts with `{`, parsed as JSON; or
    `{'error': ...}` with the end of its stderr if it failed, printed no
    such line, or ran past `timeout` seconds.
  """
  env = dict(env)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  cmd = [sys.executable, '-m', module, *args]
  try:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout} s'}
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode or not lines:
    return {'error': (proc.stderr or proc.stdout)[-800:]}
  return json.loads(lines[-1])
