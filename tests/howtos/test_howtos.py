"""The HOWTOs in howtos/diffs/: each applies to a fresh copy of
examples/mnist/ with `git apply` and with `patch -p1` (same result), and the
patched example's tests pass there, in a subprocess with 8 fake CPU devices.

A change to the example that breaks a HOWTO fails here: refresh the diffs with
`python howtos/make_diff.py refresh`, or fix the HOWTO (howtos/README.md).
"""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    'howtos_make_diff', os.path.join(REPO, 'howtos', 'make_diff.py'))
make_diff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_diff)

# The tests to run in each patched example's train_test.py: the ones its diff
# adds, which train a few steps on noise images.
PATCHED_TESTS = {
    'checkpointing': ['test_checkpoints_every_n_steps_and_resumes_mid_epoch'],
    'distributed-training': ['test_data_parallel_training_matches_one_device'],
    'ensembling': ['test_one_model_per_device_and_the_ensemble_is_evaluated'],
    'gradient-accumulation': [
        'test_two_accumulated_half_batches_equal_one_full_batch'],
    'mixed-precision': ['test_bfloat16_compute_with_float32_parameters'],
    'multi-host': ['test_a_hanging_process_stops_the_others'],
    'polyak-averaging': [
        'test_polyak_average_moves_every_epoch_and_is_evaluated'],
}

# Seconds for the patched tests of one HOWTO (generous: 2 shared cores).
TIMEOUT = 300


def _tree(root):
  files = {}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d != '__pycache__']
    for filename in filenames:
      path = os.path.join(dirpath, filename)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, root)] = f.read()
  return files


def test_every_diff_has_tests_and_a_readme_section():
  names = make_diff.names()
  assert names == sorted(PATCHED_TESTS)
  with open(os.path.join(REPO, 'howtos', 'README.md')) as f:
    readme = f.read()
  for name in names:
    assert f'\n## `{name}`' in readme, f'README.md has no section for {name}'


@pytest.mark.parametrize('name', sorted(PATCHED_TESTS))
def test_diff_is_what_make_diff_writes(name):
  """Re-applying and re-diffing gives the stored diff (up to the line
  numbers in hunk headers, which move when the example changes above)."""
  strip = lambda text: re.sub(r'^@@ .* @@$', '@@', text, flags=re.M)
  with open(make_diff.diff_path(name)) as f:
    stored = f.read()
  assert strip(make_diff.regenerate(name)) == strip(stored)


@pytest.mark.parametrize('name', sorted(PATCHED_TESTS))
def test_howto_applies_and_its_tests_pass(name, tmp_path):
  root = str(tmp_path / 'git')
  make_diff.patched_example(name, root, tool='git')
  make_diff.patched_example(name, str(tmp_path / 'patch'), tool='patch')
  assert _tree(root) == _tree(str(tmp_path / 'patch'))

  # The example's test module needs it (it skips itself without it).
  pytest.importorskip('tensorflow_datasets')
  tests = PATCHED_TESTS[name]
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('PYTEST_', 'XLA_', 'JAX_'))}
  env.update(PYTHONPATH=os.pathsep.join([root, REPO]), JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8',
             PYTHONDONTWRITEBYTECODE='1')
  cmd = [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider',
         '-p', 'no:xdist', '--rootdir', root] + [
             f'{make_diff.EXAMPLE}/train_test.py::{t}' for t in tests]
  proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True,
                        text=True, timeout=TIMEOUT, check=False)
  output = proc.stdout + proc.stderr
  assert proc.returncode == 0, output[-6000:]
  summary = output.strip().splitlines()[-1]
  assert re.search(rf'\b{len(tests)} passed\b', summary), output[-3000:]
  assert not re.search(r'skipped|xfail|deselected|error', summary), summary
