"""Tests for the checksum: CRC-32 alongside I/O (serialization.checksum)."""
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from flaxish.serialization.checksum import Checksum


def test_update_is_zlib_crc32():
  data = np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8)
  c = Checksum()
  for start in range(0, len(data), 777):
    c.update(data[start:start + 777])
  assert c.value() == zlib.crc32(data.tobytes())


@pytest.mark.parametrize('n', [0, 5, (8 << 20) - 1, (20 << 20) + 3])
@pytest.mark.parametrize('io_first', [False, True])
def test_process_runs_io_on_every_piece_in_order(n, io_first):
  data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
  c = Checksum()
  c.update(b'head')
  if io_first:  # reading: io fills each piece, then it is checksummed
    target = np.zeros_like(data)
    pos = [0]

    def fill(piece):
      piece[:] = memoryview(data)[pos[0]:pos[0] + len(piece)]
      pos[0] += len(piece)

    c.process(memoryview(target), fill, io_first=True)
    np.testing.assert_array_equal(target, data)
  else:  # writing: io copies each piece out
    out = bytearray()
    c.process(memoryview(data), out.extend, io_first=False)
    assert bytes(out) == data.tobytes()
  c.update(b'tail')
  assert c.value() == zlib.crc32(b'head' + data.tobytes() + b'tail')


def test_io_errors_propagate_after_pending_pieces_finish():
  data = np.zeros(20 << 20, np.uint8)
  calls = []

  def failing(piece):
    calls.append(len(piece))
    if len(calls) == 3:
      raise OSError('disk full')

  with pytest.raises(OSError, match='disk full'):
    Checksum().process(memoryview(data), failing, io_first=False)
  assert len(calls) == 3


_FORK_SCRIPT = """
import os, zlib
import numpy as np
from flaxish.serialization.checksum import Checksum

def crc_of(data):
  c = Checksum()
  c.process(memoryview(data), lambda piece: None, io_first=False)
  return c.value()

crc_of(np.zeros(9 << 20, np.uint8))  # starts the worker thread
pid = os.fork()
if pid == 0:  # the child: the parent's worker thread does not exist here
  ones = np.ones(9 << 20, np.uint8)
  os._exit(0 if crc_of(ones) == zlib.crc32(ones) else 1)
_, status = os.waitpid(pid, 0)
raise SystemExit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, 'fork'), reason='needs os.fork')
def test_worker_is_recreated_after_fork():
  # In a fresh process: forking the test process itself is unsafe (JAX).
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, '-c', _FORK_SCRIPT], timeout=60,
                          env=dict(os.environ, PYTHONPATH=repo),
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
