"""`nn.tabulate`: a table of a network's modules, outputs and parameters.

    table = nn.tabulate(CNN, ((128, 28, 28, 1), jnp.float32))
    table = nn.tabulate(model, x)

Each row is one module path with its class, output shapes, its own
parameters (shapes, dtypes), their count and bytes. Totals are exact sums
over every parameter. Nothing is computed: shapes come from `jax.eval_shape`.
"""
import dataclasses
import warnings
from typing import Any, Dict, List, Optional

import jax
import numpy as np

from flaxish import jax_utils
from flaxish.nn import modules as module_lib

__all__ = ['tabulate', 'Summary', 'SummaryRow']


@dataclasses.dataclass
class SummaryRow:
  """One module: `path`, `module` (class name), `outputs` (shape/dtype
  strings), `params` ({name: 'float32[3,4]'}), `num_params`, `num_bytes`."""
  path: str
  module: str
  outputs: str
  params: Dict[str, str]
  num_params: int
  num_bytes: int


@dataclasses.dataclass
class Summary:
  """The rows (in call order) and exact totals; `str()` renders the table."""
  rows: List[SummaryRow]
  total_params: int
  total_bytes: int

  def __str__(self) -> str:
    header = ('path', 'module', 'outputs', 'params', '#params', 'bytes')
    lines = [[r.path, r.module, r.outputs,
              ', '.join(f'{k}: {v}' for k, v in r.params.items()),
              f'{r.num_params:,}', _human_bytes(r.num_bytes)]
             for r in self.rows]
    lines.append(['Total', '', '', '', f'{self.total_params:,}',
                  _human_bytes(self.total_bytes)])
    widths = [max(len(str(row[i])) for row in lines + [header])
              for i in range(len(header))]

    def fmt(row):
      return ' | '.join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()

    rule = '-+-'.join('-' * w for w in widths)
    body = [fmt(header), rule] + [fmt(r) for r in lines[:-1]]
    return '\n'.join(body + [rule, fmt(lines[-1])])


def _human_bytes(n: int) -> str:
  for unit in ('B', 'KB', 'MB', 'GB'):
    if n < 1024 or unit == 'GB':
      return f'{n} B' if unit == 'B' else f'{n:.1f} {unit}'
    n /= 1024
  return str(n)


def _describe(x: Any) -> str:
  shapes = [f'{jax.numpy.dtype(leaf.dtype).name}{list(leaf.shape)}'
            for leaf in jax.tree_util.tree_leaves(x) if hasattr(leaf, 'shape')]
  return shapes[0] if len(shapes) == 1 else '(' + ', '.join(shapes) + ')'


class _Recorder:
  """Records each module path's class and first output, in call order."""

  def __init__(self):
    self.calls: Dict[str, Any] = {}

  def on_output(self, frame, cls, y) -> None:
    if frame.path not in self.calls:
      self.calls[frame.path] = (cls.__name__, _describe(y))


def _own_params(params: Dict[str, Any], path: str) -> Dict[str, Any]:
  node = params
  for part in [p for p in path.split('/') if p]:
    node = node.get(part, {}) if isinstance(node, dict) else {}
  if not isinstance(node, dict):
    return {}
  return {k: v for k, v in node.items() if not isinstance(v, dict)}


def tabulate(module_or_model: Any, *inputs, rng: Optional[Any] = None,
             print_table: bool = True, **kwargs) -> Summary:
  """Summarizes a Module class (initialized by shape) or a Model.

  Arguments:
    module_or_model: a Module class or an `nn.Model`.
    *inputs: arrays or input specs (`(shape, dtype)`, a bare shape for
      float32, or a `jax.ShapeDtypeStruct`), one per positional input.
    rng: the init key for a Module class (default `PRNGKey(0)`).
    print_table: print the table (default True).
    **kwargs: keyword arguments of `apply`.
  Returns:
    A `Summary` with one `SummaryRow` per module path and exact totals.
  """
  recorder = _Recorder()
  specs = [jax_utils.parse_input_spec(x) for x in inputs]
  # The model runs abstractly, on shapes: its warnings are not the user's.
  with module_lib.output_trackers.scope(recorder), warnings.catch_warnings():
    warnings.simplefilter('ignore')
    if isinstance(module_or_model, module_lib.Model):
      params = module_or_model.params
      jax.eval_shape(lambda p, *xs: module_or_model.module.call(p, *xs,
                                                                **kwargs),
                     params, *specs)
    elif (isinstance(module_or_model, type) and
          issubclass(module_or_model, module_lib.Module)):
      rng = jax.random.PRNGKey(0) if rng is None else rng
      _, params = module_or_model.init_by_shape(rng, specs, **kwargs)
    else:
      raise TypeError('tabulate expects a Module class or an nn.Model, got '
                      f'{type(module_or_model).__name__}')
  rows = []
  for path, (cls_name, outputs) in recorder.calls.items():
    own = _own_params(params, path)
    leaves = jax.tree_util.tree_leaves(own)
    rows.append(SummaryRow(
        path=path, module=cls_name, outputs=outputs,
        params={k: _describe(v) for k, v in sorted(own.items())},
        num_params=sum(int(np.size(x)) for x in leaves),
        num_bytes=sum(int(np.size(x)) * np.dtype(x.dtype).itemsize
                      for x in leaves)))
  rows.sort(key=lambda r: _first_seen_order(r.path, recorder.calls))
  all_leaves = jax.tree_util.tree_leaves(params)
  summary = Summary(
      rows=rows,
      total_params=sum(int(np.size(x)) for x in all_leaves),
      total_bytes=sum(int(np.size(x)) * np.dtype(x.dtype).itemsize
                      for x in all_leaves))
  if print_table:
    print(summary)
  return summary


def _first_seen_order(path: str, calls: Dict[str, Any]):
  """Pre-order: a parent before its children, siblings in call order."""
  order = list(calls)
  parts = [p for p in path.split('/') if p]
  return [order.index('/' + '/'.join(parts[:i + 1])) if
          '/' + '/'.join(parts[:i + 1]) in calls else -1
          for i in range(len(parts))]
