"""Peak memory of training, measured in a fresh process per implementation.

The parent runs `python -m benchmarks.memory WORKLOAD IMPL PRESET OVERRIDES`
and reads one JSON line back. The child builds the workload, takes the
plain-JAX parameters (so every implementation starts from the same arrays
and no library's init is counted), makes the train state, compiles the
jitted train step with the state donated, and then runs `steps` steps:

- on CPU, the process's resident memory: the Linux high-water mark
  (`VmHWM`, reset just before the steps through `/proc/self/clear_refs`)
  minus the resident memory before the steps, after `malloc_trim` has
  handed the memory freed by the compiler back to the OS. That is what the
  steps add on top of the state, batch, code and runtime already resident.
  It is a lower bound: memory the allocator keeps and reuses between
  steps is not counted again;
- on a GPU, the device allocator's `peak_bytes_in_use` minus its
  `bytes_in_use` before the steps (no compilation or init ran on the device
  before, so the peak is the steps' own).

The train state's own size (parameters, optimizer state, BatchNorm
statistics) is added to both, so the figure is the memory that training
holds at its peak. The child inherits this process's environment, so it
runs under the same `XLA_FLAGS`.
"""
import json
import os
import subprocess
import sys
from typing import Any, Dict, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

__all__ = ['measure', 'rss_bytes']


def _status(field: str) -> Optional[int]:
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith(field + ':'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def rss_bytes() -> Optional[int]:
  """The resident memory of this process (Linux), or None."""
  return _status('VmRSS')


def _trim() -> None:
  """Returns freed heap memory to the OS (glibc), so that memory freed by
  the compiler and the first step does not hide the steps' own."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):
    pass


def _reset_peak() -> bool:
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _child(workload: str, impl_name: str, preset: str,
           overrides: Dict[str, Any], steps: int) -> Dict[str, Any]:
  import warnings  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import workloads  # pylint: disable=g-import-not-at-top

  w = workloads.build(workload, preset, **overrides)
  batch = jax.block_until_ready(w.make_batch(jax.random.PRNGKey(1)))
  params, stats = w.impls['plain_jax']().init(jax.random.PRNGKey(0), batch)
  impl = w.impls[impl_name]()
  state = jax.block_until_ready(impl.make_state(params, stats))
  del params, stats
  state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    step = jax.jit(impl.train_step, donate_argnums=0).lower(
        state, batch).compile()
    state, loss = step(state, batch)  # the first run allocates the outputs
    loss.block_until_ready()
  device = jax.local_devices()[0]
  device_stats = device.memory_stats() if hasattr(device,
                                                   'memory_stats') else None
  out = {'state_bytes': state_bytes, 'platform': device.platform,
         'warnings': [str(c.message)[:200] for c in caught]}
  _trim()
  rss_before = rss_bytes()
  reset = _reset_peak()
  in_use_before = (device_stats or {}).get('bytes_in_use')
  for _ in range(steps):
    state, loss = step(state, batch)
    loss.block_until_ready()
  if device.platform != 'cpu' and device_stats:
    after = device.memory_stats()
    out['method'] = 'device peak_bytes_in_use'
    out['extra_bytes'] = after['peak_bytes_in_use'] - in_use_before
    out['device_peak_bytes'] = after['peak_bytes_in_use']
  elif reset and rss_before is not None:
    out['method'] = 'process VmHWM - VmRSS before the steps'
    out['extra_bytes'] = max(0, _status('VmHWM') - rss_before)
    out['rss_before_bytes'] = rss_before
  else:
    out['method'] = 'unavailable'
    out['extra_bytes'] = None
  if out['extra_bytes'] is not None:
    out['peak_bytes'] = state_bytes + out['extra_bytes']
  return out


def measure(workload: str, impl_name: str, preset: str,
            overrides: Optional[Dict[str, Any]] = None, steps: int = 3,
            timeout: float = 900) -> Dict[str, Any]:
  """Runs the child process; returns its figures, or `{'error': ...}` with
  the end of its output if it failed or ran past `timeout` seconds."""
  env = dict(os.environ)
  env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  cmd = [sys.executable, '-m', 'benchmarks.memory', workload, impl_name,
         preset, json.dumps(overrides or {}), str(steps)]
  try:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return {'error': f'timed out after {timeout} s'}
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode or not lines:
    return {'error': (proc.stderr or proc.stdout)[-800:]}
  return json.loads(lines[-1])


if __name__ == '__main__':
  name, impl_arg, preset_arg, overrides_arg, steps_arg = sys.argv[1:6]
  print(json.dumps(_child(name, impl_arg, preset_arg,
                          json.loads(overrides_arg), int(steps_arg))))
