"""Tests of benchmarks.child_process.run_module."""
import os

from benchmarks import child_process

CHILD = """
import json, os, sys, time
if sys.argv[1] == 'sleep':
  time.sleep(30)
if sys.argv[1] == 'fail':
  sys.exit('child failed on purpose')
print('some log line')
print(json.dumps({'args': sys.argv[1:], 'env': os.environ.get('CHILD_VAR')}))
"""


def _env(tmp_path, **extra):
  (tmp_path / 'jsonchild.py').write_text(CHILD)
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  return {**env, 'PYTHONPATH': str(tmp_path), **extra}


def test_returns_the_last_json_line(tmp_path):
  out = child_process.run_module('jsonchild', ['a', 'b'],
                                 _env(tmp_path, CHILD_VAR='x'), timeout=60)
  assert out == {'args': ['a', 'b'], 'env': 'x'}


def test_failure_and_timeout_become_errors(tmp_path):
  out = child_process.run_module('jsonchild', ['fail'], _env(tmp_path),
                                 timeout=60)
  assert 'child failed on purpose' in out['error']
  out = child_process.run_module('jsonchild', ['sleep'], _env(tmp_path),
                                 timeout=1)
  assert out == {'error': 'timed out after 1 s'}
