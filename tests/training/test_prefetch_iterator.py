"""Tests for flaxish.training.prefetch_iterator."""
import threading

import pytest

from flaxish.training.prefetch_iterator import PrefetchIterator


def test_yields_all_items_in_order():
  assert list(PrefetchIterator(iter(range(20)), buffer_size=3)) == list(
      range(20))


def test_reads_ahead_up_to_buffer_size():
  consumed = []
  ready = threading.Event()

  def gen():
    for i in range(10):
      consumed.append(i)
      if len(consumed) == 3:
        ready.set()
      yield i

  it = PrefetchIterator(gen(), buffer_size=2)
  assert next(it) == 0
  assert ready.wait(timeout=10)
  # One element taken, two buffered, and at most one being read.
  assert 3 <= len(consumed) <= 4
  it.close()


def test_reraises_errors_from_the_iterator():
  def gen():
    yield 1
    raise RuntimeError('broken input pipeline')

  it = PrefetchIterator(gen())
  assert next(it) == 1
  with pytest.raises(RuntimeError, match='broken input pipeline'):
    next(it)


def test_close_stops_iteration():
  with PrefetchIterator(iter(range(1000)), buffer_size=1) as it:
    assert next(it) == 0
  it.close()
  remaining = list(it)
  assert len(remaining) <= 1


def test_bad_buffer_size():
  with pytest.raises(ValueError, match='buffer_size must be >= 1'):
    PrefetchIterator(iter([]), buffer_size=0)
