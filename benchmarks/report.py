"""Renders benchmark results (the JSON files of `bench.py`) as Markdown.

`render(results_list)` returns `RESULTS.md`: the goals, met or missed and
by how much, then one section per results file (machine, versions, commit,
XLA flags, one table per workload with absolute figures and ratios from the
same run, the init comparison with Linen, the un-jitted call overhead).
"""
import statistics
from typing import Any, Dict, List, Optional

__all__ = ['render', 'goal_rows', 'workload_rows', 'step_ratio',
           'init_ratio', 'GOALS']

CONTROL = 'plain_jax_again'  # = workloads.CONTROL (no JAX import here)
IMPLS = ('flaxish', 'plain_jax', CONTROL, 'linen')
LABEL = {'flaxish': 'flaxish', 'plain_jax': 'plain JAX',
         CONTROL: 'plain JAX again', 'linen': 'Linen + optax'}
GOALS = {
    'steady': ('steady-state train step <= 1.02x plain JAX', 1.02),
    'init': ("cold `init_by_shape` <= Linen's `init`", 1.0),
    'first_step': ("first train step <= Linen's", 1.0),
    'call': ("un-jitted call overhead <= Linen's `apply`", 1.0),
    'memory': ('peak memory <= plain JAX with buffer donation', 1.0),
}
# Dense peak FLOP/s of the GPUs we report MFU for, by device kind prefix:
# (bf16 tensor core, TF32 tensor core) -- NVIDIA H100 SXM datasheet.
PEAK_FLOPS = {'NVIDIA H100': {'bfloat16': 989.4e12, 'float32': 494.7e12},
              'NVIDIA H200': {'bfloat16': 989.4e12, 'float32': 494.7e12}}


def fmt_time(seconds: Optional[float]) -> str:
  if seconds is None:
    return ''
  if seconds >= 1:
    return f'{seconds:.2f} s'
  if seconds >= 1e-3:
    return f'{seconds * 1e3:.2f} ms'
  return f'{seconds * 1e6:.0f} us'


def fmt_ratio(r: Optional[float], spread=None) -> str:
  if r is None:
    return ''
  text = f'{r:.3f}' if r < 10 else f'{r:.1f}'
  if spread and len(spread) > 1 and None not in spread:
    text += f' ({min(spread):.2f}-{max(spread):.2f})'
  return text


def fmt_mib(nbytes: Optional[float]) -> str:
  return '' if nbytes is None else f'{nbytes / 2**20:.1f} MiB'


def _median(xs):
  xs = [x for x in xs if x is not None]
  return statistics.median(xs) if xs else None


def _ratio(a, b):
  return a / b if a is not None and b else None


def _per_round(a: List[float], b: List[float]) -> List[float]:
  return [x / y for x, y in zip(a, b) if y]


class _Figures:
  """The scalar figures of one workload result, by implementation."""

  def __init__(self, result: Dict[str, Any]):
    self.result = result
    self.impls = [n for n in IMPLS if n in result['impls']]

  def get(self, impl: str, metric: str):
    """`(median, per-round samples)` of a metric, or `(None, [])`."""
    d = self.result['impls'].get(impl)
    if d is None:
      return None, []
    if metric in ('step', 'eval', 'call'):
      s = d.get(f'{metric}_s')
      return (s['median'], s['round_medians']) if s else (None, [])
    if metric == 'step_p10':
      return d.get('step_s', {}).get('p10'), []
    if metric.startswith('first_step'):
      phase = metric.split(':')[1] if ':' in metric else 'total'
      xs = [f[phase] for f in d.get('first_step', [])]
      return _median(xs), xs
    if metric == 'memory':
      m = self.result.get('memory', {}).get(impl, {})
      return m.get('peak_bytes'), []
    if metric == 'xla_peak':
      return d.get('xla', {}).get('peak_bytes'), []
    if metric == 'xla_flops':
      return d.get('xla', {}).get('flops'), []
    raise KeyError(metric)

  def ratio(self, metric: str, impl: str, ref: str):
    """`(ratio of medians, per-round ratios)` of `impl` over `ref`."""
    a, sa = self.get(impl, metric)
    b, sb = self.get(ref, metric)
    return _ratio(a, b), _per_round(sa, sb)


def step_ratio(result: Dict[str, Any]):
  """`(ratio, per-round ratios)` of the steady-state step, flaxish / plain."""
  return _Figures(result).ratio('step', 'flaxish', 'plain_jax')


def init_ratio(result: Dict[str, Any], mode: str = 'cold_s'):
  """`(ratio of medians, per-round ratios)` of an init result (`run_init`),
  flaxish `init_by_shape` / Linen `init`; `mode` 'cold_s' or 'warm_s'."""
  a, b = (result['impls'][n][mode] for n in ('flaxish', 'linen'))
  return _ratio(_median(a), _median(b)), _per_round(a, b)


ROWS = [  # (metric, label, formatter)
    ('first_step', 'first train step (trace+compile+run)', fmt_time),
    ('first_step:trace', '... of which tracing', fmt_time),
    ('first_step:compile', '... of which XLA compile', fmt_time),
    ('step', 'steady-state train step', fmt_time),
    ('step_p10', '... 10th percentile of the steps', fmt_time),
    ('eval', 'eval step', fmt_time),
    ('memory', 'peak memory, measured', fmt_mib),
    ('xla_peak', 'peak memory of the step, XLA', fmt_mib),
    ('xla_flops', 'FLOPs of the step, XLA cost analysis (1)',
     lambda f: f'{f / 1e9:.2f} G'),
]


def _ratio_columns(fig: _Figures) -> List[tuple]:
  """`(header, impl, reference)` of the ratio columns of a workload table;
  the control column (plain JAX compiled again) shows the resolution."""
  cols = [('flaxish / plain JAX', 'flaxish', 'plain_jax')]
  if 'linen' in fig.impls:
    cols.append(('flaxish / Linen', 'flaxish', 'linen'))
  if CONTROL in fig.impls:
    cols.append(('plain JAX again / plain JAX', CONTROL, 'plain_jax'))
  return cols


def workload_rows(result: Dict[str, Any]) -> List[List[str]]:
  """Table rows: metric, one column per implementation, and the ratios
  flaxish / plain JAX, flaxish / Linen and the control's (per-round range
  in brackets)."""
  fig = _Figures(result)
  rows = []
  for metric, label, fmt in ROWS:
    values = [fig.get(n, metric)[0] for n in fig.impls]
    if all(v is None for v in values):
      continue
    row = [label] + [fmt(v) if v is not None else '' for v in values]
    for _, impl, ref in _ratio_columns(fig):
      row.append(fmt_ratio(*fig.ratio(metric, impl, ref)))
    rows.append(row)
  step = {n: fig.get(n, 'step')[0] for n in fig.impls}
  unit = result['unit']
  row = [f'throughput ({unit}/s)']
  for n in fig.impls:
    row.append(f'{result["items_per_step"] / step[n]:,.0f}' if step[n] else '')
  rows.append(row)
  return rows


def _mfu(result, meta) -> Optional[str]:
  flops = result.get('flops_per_step')
  kind = meta.get('device_kind', '')
  peaks = next((v for k, v in PEAK_FLOPS.items() if kind.startswith(k)),
               None)
  if not flops or peaks is None or meta.get('platform') == 'cpu':
    return None
  dtype = result['config'].get('dtype', 'float32')
  peak = peaks.get(dtype, peaks['float32'])
  parts = []
  for n in IMPLS:
    s = result['impls'].get(n, {}).get('step_s')
    if s:
      achieved = flops / s['median']
      parts.append(f'{LABEL[n]} {achieved / 1e12:.0f} TFLOP/s = '
                   f'{100 * achieved / peak:.1f}% MFU')
  return (f'Model FLOPs per train step (matmuls, counted analytically): '
          f'{flops / 1e12:.3f} TFLOP; peak {peak / 1e12:.0f} TFLOP/s '
          f'({"bf16" if dtype == "bfloat16" else "TF32"} dense, {kind}). '
          + '; '.join(parts) + '.')


def goal_rows(results: Dict[str, Any]) -> List[List[str]]:
  """One row per (goal, workload) of one results file."""
  rows = []
  plat = results['meta'].get('label', results['meta'].get('platform', ''))

  def verdict(r, target):
    if r is None:
      return 'n/a'
    if r <= target:
      return 'met'
    return f'missed by {100 * (r / target - 1):.1f}%'

  for name, res in results.get('workloads', {}).items():
    fig = _Figures(res)
    checks = [('steady', 'step', 'plain_jax'),
              ('first_step', 'first_step', 'linen'),
              ('memory', 'memory', 'plain_jax')]
    for goal, metric, ref in checks:
      if ref not in fig.impls:
        continue
      label, target = GOALS[goal]
      if goal == 'memory':
        # XLA's figure decides: on CPU the resident-memory measurement is
        # only a lower bound (see memory.py).
        for kind, metric in (('XLA', 'xla_peak'),):
          a, b = fig.get('flaxish', metric)[0], fig.get(ref, metric)[0]
          if a is None or not b:
            continue
          v = 'met' if a <= b else (
              f'missed by {(a - b) / 2**20:.2f} MiB ({100 * (a / b - 1):.2f}%)'
              if a - b >= 2**10 else f'missed by {a - b:.0f} bytes')
          rows.append([plat, f'{label} ({kind})', name, fmt_ratio(a / b), v])
        continue
      r, spread = fig.ratio(metric, 'flaxish', ref)
      text, v = fmt_ratio(r, spread), verdict(r, target)
      if ref == 'plain_jax' and CONTROL in fig.impls:
        control = fig.ratio(metric, CONTROL, ref)
        text += '; control ' + fmt_ratio(*control)
        if control[0] is not None and abs(control[0] - 1) > target - 1:
          v = 'not resolved: the control is off by more than the margin'
      rows.append([plat, label, name, text, v])
  for name, res in results.get('init', {}).items():
    r, spread = init_ratio(res)
    rows.append([plat, GOALS['init'][0], name, fmt_ratio(r, spread),
                 verdict(r, GOALS['init'][1])])
  call = results.get('call_overhead')
  if call and 'linen' in call['impls']:
    over = _overheads(call)
    r = _ratio(over['flaxish'], over['linen'])
    rows.append([plat, GOALS['call'][0], 'mlp', fmt_ratio(r),
                 verdict(r, GOALS['call'][1])])
  return rows


def _overheads(call) -> Dict[str, float]:
  base = call['impls']['plain_jax']['call_s']['median']
  return {n: d['call_s']['median'] - base for n, d in call['impls'].items()}


def _table(header: List[str], rows: List[List[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join(['---'] * len(header)) + '|']
  lines += ['| ' + ' | '.join(r + [''] * (len(header) - len(r))) + ' |'
            for r in rows]
  return '\n'.join(lines)


def _run_line(run: Dict[str, Any], name_workloads: bool) -> str:
  part = (f' ({", ".join(run.get("workloads") or [])})' if name_workloads
          else '')
  commit = f', commit `{run["commit"]}`' if run.get('commit') else ''
  return (f'- Run{part}: {run.get("date", "")}{commit}, '
          f'{run.get("wall_s") or 0:.0f}'
          f' s; load average {run.get("load_before", "?")} before, '
          f'{run.get("load_after", "?")} after; `{run.get("command", "")}`')


def _meta_lines(meta: Dict[str, Any]) -> List[str]:
  v = meta.get('versions', {})
  versions = ', '.join(f'{k} {v[k]}' for k in ('python', 'jax', 'jaxlib',
                                                'flax', 'optax', 'numpy')
                       if v.get(k))
  s = meta.get('settings', {})
  runs = meta.get('runs') or [meta]
  return [
      f'- Machine: {meta.get("machine", "")}',
      f'- Device: {meta.get("device_kind", "")} '
      f'({meta.get("platform", "")}); {versions}; flaxish at commit '
      f'`{meta.get("commit") or "?"}` ("+": with uncommitted changes)',
      f'- Every column: `XLA_FLAGS={meta.get("xla_flags", "?")}`; '
      f'flaxish CPU defaults: {meta.get("cpu_defaults", "?")}',
      *[_run_line(run, len(runs) > 1) for run in runs],
      f'- Settings: preset `{meta.get("preset", "")}`; first-step rounds '
      f'{s.get("cold_rounds")}, init rounds {s.get("init_rounds")} cold / '
      f'{s.get("warm_init_rounds")} warm, steady state {s.get("rounds")} '
      f'rounds x {s.get("steps")} steps '
      f'after {s.get("warmup")} warm-up steps; un-jitted calls '
      f'{s.get("call_rounds")} rounds x {s.get("calls")}; memory: '
      f'{meta.get("memory_method", "")}',
  ] + ([f'- Note: {meta["note"]}'] if meta.get('note') else [])


def render_results(results: Dict[str, Any]) -> str:
  """The section of one results file."""
  meta = results['meta']
  out = [f'## {meta.get("label", meta.get("platform", ""))}', '']
  out += _meta_lines(meta) + ['']
  for name, res in results.get('workloads', {}).items():
    fig = _Figures(res)
    header = ['', *[LABEL[n] for n in fig.impls],
              *[h for h, _, _ in _ratio_columns(fig)]]
    out += [f'### {name}: {res["title"]}', '']
    out.append(_table(header, workload_rows(res)))
    check = res.get('check', {})
    if check:
      diffs = ', '.join(
          f'{LABEL[n]} {d["update"]:.1e}' for n, d in check['impls'].items()
          if n != 'plain_jax')
      out += ['', f'Check before timing: every implementation\'s first step '
              f'from the same params and batch gives loss '
              f'{check["loss"]:.5f} (plain JAX); relative difference of the '
              f'parameter update from plain JAX\'s: {diffs}.']
    losses = {n: d.get('loss_after_steps') for n, d in res['impls'].items()}
    if all(v is not None for v in losses.values()):
      out.append('Loss after all timed steps: ' + ', '.join(
          f'{LABEL[n]} {v:.4f}' for n, v in losses.items()) + '.')
    mfu = _mfu(res, meta)
    if mfu:
      out.append(mfu)
    mem = res.get('memory', {})
    errors = {n: m['error'] for n, m in mem.items() if 'error' in m}
    if errors:
      out.append(f'Memory measurement failed: {errors}')
    out.append('')
  inits = results.get('init', {})
  if inits:
    out += ['### init: flaxish `init_by_shape` vs Linen `init` on ones', '',
            _table(['workload', 'flaxish, cold', 'Linen, cold',
                    'flaxish / Linen, cold', 'flaxish, warm', 'Linen, warm',
                    'flaxish / Linen, warm'], [
                        [name] + [x for mode in ('cold_s', 'warm_s') for x in (
                            fmt_time(_median(res['impls']['flaxish'][mode])),
                            fmt_time(_median(res['impls']['linen'][mode])),
                            fmt_ratio(*init_ratio(res, mode)))]
                        for name, res in inits.items()]),
            '', 'Cold: `jax.clear_caches()` before every call, as in a new '
            'process; warm: the same call repeated.', '']
  call = results.get('call_overhead')
  if call:
    over = _overheads(call)
    names = [n for n in IMPLS if n in call['impls']]
    out += [f'### mlp: {call["title"]}', '']
    rows = [['time per call'] + [fmt_time(call['impls'][n]['call_s']['median'])
                                 for n in names],
            ['overhead over plain JAX'] + [fmt_time(over[n]) if n != 'plain_jax'
                                           else '' for n in names]]
    out += [_table([''] + [LABEL[n].split(' + ')[0] for n in names], rows),
            '']
  out += ['(1) On a GPU, XLA\'s cost analysis leaves out the convolutions and '
          'matrix products it hands to cuDNN and cuBLAS: the figure is then '
          'mostly element-wise work. Equal figures still say that two '
          'programs do the same work.', '']
  return '\n'.join(out)


HEADER = """# Benchmarks: flaxish vs plain JAX vs Flax Linen

Generated by `make bench` (`python -m benchmarks.bench`) from the JSON files
in `benchmarks/results/`; how to run and read it: `benchmarks/README.md`.

Every figure in a table comes from one run in one process (memory: one
fresh process per implementation), so every column runs under the same
`XLA_FLAGS`, listed per section. Implementations alternate round by round,
times are medians, and ratios are flaxish over the reference with the range
of the per-round ratios in brackets. "plain JAX again" is the hand-written
program compiled a second time: its ratio to plain JAX is the resolution of
the comparison.
"""


def render(results_list: List[Dict[str, Any]]) -> str:
  out = [HEADER, '## Goals', '']
  rows = [r for results in results_list for r in goal_rows(results)]
  out.append(_table(['machine', 'goal', 'workload', 'ratio', 'verdict'],
                    rows))
  out.append('')
  for results in results_list:
    out.append(render_results(results))
  return '\n'.join(out)
