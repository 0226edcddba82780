"""Tests of flaxish.training.progress."""
import io

from flaxish.training import progress


class _Clock:
  def __init__(self):
    self.now = 100.

  def __call__(self):
    return self.now


def test_progress_line_shows_rate_and_eta(monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(progress.time, 'perf_counter', clock)
  out = io.StringIO()
  bar = progress.ProgressBar(total=10, desc='epoch 1', width=10, stream=out,
                             min_interval=0.)
  clock.now += 2.
  bar.update(4, loss=0.123456)
  assert bar.line() == ('epoch 1 [####......] 4/10 2.00 steps/s elapsed '
                        '2.0s ETA 3.0s loss=0.1235')
  clock.now += 3.
  bar.update(6)
  bar.close()
  lines = out.getvalue().splitlines()
  assert lines[-1].startswith('epoch 1 [##########] 10/10 2.00 steps/s')
  assert 'ETA' not in lines[-1]


def test_non_tty_output_is_throttled(monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(progress.time, 'perf_counter', clock)
  out = io.StringIO()
  bar = progress.ProgressBar(total=100, stream=out, min_interval=10.)
  for _ in range(100):
    clock.now += 0.5
    bar.update()
  bar.close()
  # Drawn at steps 1, 21, 41, 61, 81 (every 10 s) and once at the end.
  assert len(out.getvalue().splitlines()) == 6
  bar = progress.ProgressBar(total=2, stream=out, min_interval=0.)
  bar.update(2)
  bar.close()  # the last update already logged 2/2: not printed twice
  assert [l.split()[1] for l in out.getvalue().splitlines()[6:]] == ['2/2']


def test_unknown_total_and_durations():
  bar = progress.ProgressBar(total=None, stream=io.StringIO())
  bar.update(3)
  assert bar.line().startswith('3 ')
  assert progress.format_duration(3725) == '1:02:05'
  assert progress.format_duration(125) == '2:05'
