"""An iterator that fills a buffer from another iterator in a thread."""
import collections
import threading
from typing import Any, Iterator

__all__ = ['PrefetchIterator']


class PrefetchIterator:
  """Reads `data_iter` ahead in a background thread.

  Errors raised by `data_iter` are re-raised by `next()`. Call `close()` (or
  use it as a context manager) to stop the thread early.

  Arguments:
    data_iter: the iterator (or iterable) to read.
    buffer_size: how many elements to read ahead (default 1).
  """

  def __init__(self, data_iter: Any, buffer_size: int = 1):
    if buffer_size < 1:
      raise ValueError(f'PrefetchIterator: buffer_size must be >= 1, got '
                       f'{buffer_size}')
    self._data_iter = iter(data_iter)
    self.buffer_size = buffer_size
    self._cond = threading.Condition()
    self._buffer = collections.deque()
    self._active = True
    self._done = False
    self._error = None
    self._thread = threading.Thread(target=self._prefetch_loop, daemon=True)
    self._thread.start()

  def __iter__(self) -> Iterator[Any]:
    return self

  def __next__(self) -> Any:
    with self._cond:
      self._cond.wait_for(lambda: self._buffer or self._done or
                          not self._active)
      if self._buffer:
        item = self._buffer.popleft()
        self._cond.notify_all()
        return item
      if self._error is not None:
        error, self._error = self._error, None
        raise error
      raise StopIteration

  def close(self) -> None:
    """Stops the background thread (elements not yet read are dropped)."""
    with self._cond:
      self._active = False
      self._cond.notify_all()

  def __enter__(self) -> 'PrefetchIterator':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _prefetch_loop(self) -> None:
    while True:
      with self._cond:
        self._cond.wait_for(lambda: len(self._buffer) < self.buffer_size or
                            not self._active)
        if not self._active:
          return
      try:
        item = next(self._data_iter)
      except Exception as e:  # pylint: disable=broad-except
        with self._cond:
          if not isinstance(e, StopIteration):
            self._error = e
          self._done = True
          self._cond.notify_all()
        return
      with self._cond:
        self._buffer.append(item)
        self._cond.notify_all()
