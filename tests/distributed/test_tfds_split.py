"""process_split: each process's part of a tfds split; no TensorFlow import
from flaxish."""
import re
import subprocess
import sys

import pytest

from flaxish import distributed
from tests.distributed import _launch


def test_even_split_sizes():
  assert distributed.even_split_sizes(11, 3, drop_remainder=False) == [4, 4, 3]
  assert distributed.even_split_sizes(11, 3) == [3, 3, 3]
  with pytest.raises(ValueError, match='need num_examples >= 0 and count '
                     '>= 1, got 5 and 0'):
    distributed.even_split_sizes(5, 0)


def test_parts_from_num_examples_without_tfds():
  parts = [distributed.process_split('train', num_examples=11,
                                     drop_remainder=False, process_index=i,
                                     process_count=3) for i in range(3)]
  assert parts == ['train[0:4]', 'train[4:8]', 'train[8:11]']
  parts = [distributed.process_split('train', num_examples=11,
                                     process_index=i, process_count=3)
           for i in range(3)]
  assert parts == ['train[0:3]', 'train[3:6]', 'train[6:9]']


def test_one_process_reads_the_whole_split():
  assert distributed.process_split('train[:90%]') == 'train[:90%]'
  assert distributed.process_split('test', num_examples=7) == 'test'


def test_errors():
  with pytest.raises(ValueError, match=re.escape(
      'with num_examples, split must be a plain split name such as "train", '
      "got 'train[:50%]'")):
    distributed.process_split('train[:50%]', num_examples=10, process_index=0,
                              process_count=2)
  with pytest.raises(ValueError, match=r'process_index=3 is not in \[0, 2\)'):
    distributed.process_split('train', process_index=3, process_count=2)


def test_parts_from_tfds_even_splits():
  tfds = pytest.importorskip('tensorflow_datasets')
  for drop in (True, False):
    got = distributed.process_split('train[:90%]', drop_remainder=drop,
                                    process_index=1, process_count=4,
                                    even_splits=tfds.even_splits)
    assert got == tfds.even_splits('train[:90%]', n=4,
                                   drop_remainder=drop)[1]


def test_split_expression_without_num_examples_or_even_splits():
  with pytest.raises(ValueError, match='pass num_examples=.* or '
                     'even_splits=tfds.even_splits'):
    distributed.process_split('train[:90%]', process_index=0,
                              process_count=2)


def test_importing_flaxish_distributed_imports_no_tensorflow():
  code = ('import sys, flaxish, flaxish.distributed; '
          'print(sorted(m for m in sys.modules if m.split(".")[0] in '
          '("tensorflow", "tensorflow_datasets")))')
  out = subprocess.run([sys.executable, '-c', code], cwd=_launch.REPO,
                       env=_launch.plain_env(), capture_output=True,
                       text=True, timeout=120, check=True).stdout
  assert out.strip() == '[]'
