"""Training curves as a PNG, from the records of a JSON-lines metrics log."""
import os
from typing import Any, Optional, Sequence

__all__ = ['plot_curves']


def _import_matplotlib():
  """The Agg canvas and Figure, without touching pyplot's global backend."""
  try:
    import matplotlib  # noqa: F401  (fails first when it is missing)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError as e:
    raise ImportError(
        'plot_curves needs matplotlib, which is not installed: run '
        '`pip install matplotlib` (or `pip install flaxish[examples]`).'
    ) from e
  return FigureCanvasAgg, Figure


def plot_curves(records, path, metrics: Sequence[str] = ('loss', 'accuracy'),
                x: Optional[str] = None, size: Sequence[float] = (5., 4.),
                dpi: int = 100) -> str:
  """Writes a PNG to `path` (returned) with one subplot per metric and one
  line per split.

  Arguments:
    records: dicts as written by `JsonlWriter`, or the path of such a file.
    path: the PNG (its directory is created if missing).
    metrics: the metric names, one subplot each (default loss, accuracy).
    x: the x-axis key (default None: 'epoch' if every record has it, else
      'step').
    size: (width, height) of one subplot in inches (default (5, 4)).
    dpi: pixels per inch (default 100).
  """
  if isinstance(records, (str, os.PathLike)):
    from flaxish.metrics.jsonl import read_jsonl
    records = read_jsonl(records)
  if isinstance(metrics, str):
    metrics = (metrics,)
  metrics = tuple(metrics)
  if not metrics:
    raise ValueError('plot_curves needs at least one metric name.')
  records = [r for r in records if isinstance(r, dict)]
  used = [r for r in records if any(m in r for m in metrics)]
  for metric in metrics:
    if not any(metric in r for r in used):
      available = sorted({k for r in records for k in r} -
                         {'step', 'split', 'time', 'epoch'})
      raise ValueError(f'No record has the metric {metric!r}; the records '
                       f'have {available}.')
  if x is None:
    x = 'epoch' if all('epoch' in r for r in used) else 'step'
  for r in used:
    if x not in r:
      raise ValueError(f'A record has no {x!r} for the x axis: {r}.')

  FigureCanvasAgg, Figure = _import_matplotlib()
  width, height = size
  figure = Figure(figsize=(width * len(metrics), height), dpi=dpi)
  FigureCanvasAgg(figure)
  splits = list(dict.fromkeys(str(r.get('split', '')) for r in used))
  for i, metric in enumerate(metrics):
    axes = figure.add_subplot(1, len(metrics), i + 1)
    for split in splits:
      points = sorted((r[x], r[metric]) for r in used
                      if str(r.get('split', '')) == split and
                      _is_number(r.get(metric)))
      if points:
        xs, ys = zip(*points)
        axes.plot(xs, ys, marker='.' if len(points) < 30 else None,
                  label=split or None)
    axes.set_title(metric)
    axes.set_xlabel(x)
    axes.grid(True, alpha=0.3)
    if any(split for split in splits):
      axes.legend()
  figure.tight_layout()
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or os.curdir, exist_ok=True)
  figure.savefig(path, format='png', dpi=dpi)
  return path


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)
