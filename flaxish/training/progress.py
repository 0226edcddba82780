"""A dependency-free progress bar with steps/s and ETA, for training loops.

    with ProgressBar(total=steps_per_epoch, desc='epoch 1') as bar:
      for batch in batches:
        bar.update(loss=float(loss))
"""
import sys
import time
from typing import Any, Optional, TextIO

__all__ = ['ProgressBar', 'format_duration']


def format_duration(seconds: float) -> str:
  """'1:02:03', '2:03' or '3.2s'."""
  if seconds < 60:
    return f'{seconds:.1f}s'
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  if hours:
    return f'{hours}:{minutes:02d}:{secs:02d}'
  return f'{minutes}:{secs:02d}'


class ProgressBar:
  """Progress of `total` steps: bar, count, steps/s, elapsed time and ETA.

  Redraws one carriage-returned line; when the stream is not a terminal
  (logs, CI), prints a line at most every `min_interval` seconds, plus the
  final one.

  Arguments:
    total: the number of steps (None: unknown, no bar and no ETA).
    desc: a label printed before the bar.
    width: the bar's width in characters (default 24).
    stream: where to write (default sys.stderr).
    min_interval: seconds between redraws when the stream is not a tty.
  """

  def __init__(self, total: Optional[int], desc: str = '', width: int = 24,
               stream: Optional[TextIO] = None, min_interval: float = 10.):
    self.total = total
    self.desc = desc
    self.width = width
    self.stream = stream if stream is not None else sys.stderr
    self.count = 0
    self.start = time.perf_counter()
    self._is_tty = getattr(self.stream, 'isatty', lambda: False)()
    self._min_interval = 0.1 if self._is_tty else min_interval
    self._last_draw = -float('inf')
    self._drawn_count = None
    self._postfix = ''

  @property
  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def steps_per_second(self) -> float:
    elapsed = self.elapsed
    return self.count / elapsed if elapsed > 0 else 0.

  def line(self) -> str:
    """The current status line (without the carriage return)."""
    rate = self.steps_per_second()
    parts = [self.desc] if self.desc else []
    if self.total:
      done = min(self.count / self.total, 1.)
      filled = int(done * self.width)
      parts.append('[' + '#' * filled + '.' * (self.width - filled) + ']')
      parts.append(f'{self.count}/{self.total}')
    else:
      parts.append(f'{self.count}')
    parts += [f'{rate:.2f} steps/s', f'elapsed {format_duration(self.elapsed)}']
    if self.total and rate > 0 and self.count < self.total:
      parts.append(f'ETA {format_duration((self.total - self.count) / rate)}')
    if self._postfix:
      parts.append(self._postfix)
    return ' '.join(parts)

  def update(self, n: int = 1, **metrics: Any) -> None:
    """Advances by `n` steps; `metrics` (name=value) are shown at the end."""
    self.count += n
    if metrics:
      self._postfix = ' '.join(f'{k}={_fmt(v)}' for k, v in metrics.items())
    now = time.perf_counter()
    if now - self._last_draw >= self._min_interval:
      self._draw(final=False)
      self._last_draw = now

  def _draw(self, final: bool) -> None:
    end = '\n' if final or not self._is_tty else ''
    self.stream.write(('\r' if self._is_tty else '') + self.line() + end)
    self.stream.flush()
    self._drawn_count = self.count

  def close(self) -> None:
    """Draws the final line (unless a log already has it)."""
    if self._is_tty or self._drawn_count != self.count:
      self._draw(final=True)

  def __enter__(self) -> 'ProgressBar':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _fmt(value: Any) -> str:
  try:
    return f'{float(value):.4g}'
  except (TypeError, ValueError):
    return str(value)
