"""Timing one workload, its implementations interleaved round by round.

For every implementation of a workload, from the same parameters and batch
(`run_workload`):

- the first train step of a fresh `jax.jit` (trace, lower, compile, run,
  each timed), `cold_rounds` times, each after `jax.clear_caches()`;
- the equivalence check, right after the first cold round and before any
  other timing: the first train steps of all implementations must give the
  same loss, the same parameter update (gradients and update rule) and the
  same BatchNorm statistics as plain JAX;
- steady state, with the executable of the first step: `warmup` untimed
  steps, then `rounds` rounds of `steps` steps per implementation, each step
  blocked on its loss and timed alone;
- eval steps, the same way;
- XLA's own view of the compiled train step: FLOPs, bytes accessed and the
  memory it needs (arguments + outputs - donated aliases + temporaries).

`run_init` times flaxish's `init_by_shape` against Linen's `init` on a batch
of ones: cold (`jax.clear_caches()` before every call, as in a new process)
and warm, interleaved. `run_call_overhead` times un-jitted calls.

Within a round the implementations run one after the other, in an order
that rotates from round to round, so that load from other processes on the
machine hits all of them alike. Ratios are taken between medians.
"""
import dataclasses
import functools
import statistics
import time
from typing import Any, Callable, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['Settings', 'run_workload', 'run_init', 'run_call_overhead',
           'CheckError']

PARAM_SEED, DATA_SEED = 0, 1


class CheckError(AssertionError):
  """The implementations of a workload do not compute the same thing."""


@dataclasses.dataclass
class Settings:
  """How much to measure (`bench.SETTINGS` has each preset's values)."""
  rounds: int = 5         # interleaved rounds of steady-state/eval timing
  steps: int = 8          # timed steps per implementation and round
  warmup: int = 3         # untimed steps before the first round
  cold_rounds: int = 2    # rounds of first-step (compile) timing
  warm_compile: bool = False  # compile one step untimed before the cold
                              # rounds (GPU: autotuning is cached per process)
  init_rounds: int = 3    # rounds of cold init timing (run_init)
  warm_init_rounds: int = 5  # rounds of warm init timing (run_init)
  call_rounds: int = 7    # rounds of the un-jitted call timing
  calls: int = 50         # un-jitted calls per implementation and round
  impls: tuple = ('flaxish', 'plain_jax', 'linen')


def rotate(names: List[str], r: int) -> List[str]:
  k = r % len(names)
  return names[k:] + names[:k]


def copy_tree(tree: Any) -> Any:
  return jax.tree_util.tree_map(jnp.copy, tree)


def _timed(fn: Callable[[], Any]):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - start, out


def _shapes(tree):
  return jax.tree_util.tree_map(lambda x: (tuple(x.shape), str(x.dtype)),
                                tree)


def _rel(a, b, scale=None) -> float:
  """||a - b|| / ||scale|| (default ||b||) over all leaves, in float64."""
  la = [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(a)]
  lb = [np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(b)]
  if not la:
    return 0.
  diff = np.sqrt(sum(np.sum((x - y)**2) for x, y in zip(la, lb)))
  ls = lb if scale is None else [
      np.asarray(x, np.float64).ravel() for x in jax.tree_util.tree_leaves(
          scale)]
  norm = np.sqrt(sum(np.sum(x**2) for x in ls))
  return float(diff / norm) if norm else float(diff)


def xla_analysis(compiled) -> Dict[str, Any]:
  """FLOPs, bytes and memory of a compiled computation, as XLA reports them."""
  out: Dict[str, Any] = {}
  try:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    out['flops'] = float(cost.get('flops', 0.))
    out['bytes_accessed'] = float(cost.get('bytes accessed', 0.))
  except Exception:  # pylint: disable=broad-except
    pass
  try:
    mem = compiled.memory_analysis()
    arg, res = mem.argument_size_in_bytes, mem.output_size_in_bytes
    alias, temp = mem.alias_size_in_bytes, mem.temp_size_in_bytes
    out.update(argument_bytes=arg, output_bytes=res, alias_bytes=alias,
               temp_bytes=temp, peak_bytes=arg + res - alias + temp)
  except Exception:  # pylint: disable=broad-except
    pass
  return out


def first_step(impl, params, stats, batch):
  """A fresh jit of the train step: trace, lower, compile and run it.

  Returns `(seconds by phase, xla analysis, the compiled step, new state,
  loss)`.
  """
  state = jax.block_until_ready(impl.make_state(copy_tree(params),
                                                copy_tree(stats)))
  jax.clear_caches()
  t0 = time.perf_counter()
  traced = jax.jit(impl.train_step, donate_argnums=0).trace(state, batch)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  compiled = lowered.compile()
  t3 = time.perf_counter()
  new_state, loss = compiled(state, batch)
  loss.block_until_ready()
  t4 = time.perf_counter()
  phases = {'total': t4 - t0, 'trace': t1 - t0, 'lower': t2 - t1,
            'compile': t3 - t2, 'run': t4 - t3}
  return phases, xla_analysis(compiled), compiled, new_state, loss


def check_equivalence(workload, params, stats, firsts, log) -> Dict[str, Any]:
  """Compares every implementation's first step with plain JAX's.

  `firsts[name] = (impl, new_state, loss)`. Raises `CheckError` on a
  mismatch; returns the measured differences.
  """
  tol = {'loss': 1e-5, 'update': 2e-3, 'stats': 1e-4,
         **(workload.tolerance or {})}
  ref_impl, ref_state, ref_loss = firsts['plain_jax']
  ref_update = jax.tree_util.tree_map(lambda a, b: a - b,
                                      ref_impl.params_of(ref_state), params)
  ref_stats = ref_impl.stats_of(ref_state)
  out = {'reference': 'plain_jax', 'loss': float(ref_loss),
         'tolerance': tol, 'impls': {}}
  for name, (impl, state, loss) in firsts.items():
    new_params = impl.params_of(state)
    if _shapes(new_params) != _shapes(params):
      raise CheckError(f'{workload.name}/{name}: the params after one step '
                       'do not have the layout of the initial params')
    update = jax.tree_util.tree_map(lambda a, b: a - b, new_params, params)
    diffs = {'loss': abs(float(loss) - float(ref_loss)) /
                     max(1., abs(float(ref_loss))),
             'update': _rel(update, ref_update),
             'stats': _rel(impl.stats_of(state), ref_stats)}
    out['impls'][name] = {'loss': float(loss), **diffs}
    bad = [k for k, v in diffs.items() if not v <= tol[k]]
    if bad:
      raise CheckError(
          f'{workload.name}: {name} and plain JAX differ after the first '
          f'train step from the same params and batch: {diffs} (tolerances '
          f'{tol}); the comparison would not be honest')
  log(f'  check: same loss {float(ref_loss):.5f}, update and statistics as '
      'plain JAX: ' + ', '.join(
          f'{n} (update rel. diff {d["update"]:.1e})'
          for n, d in out['impls'].items() if n != 'plain_jax'))
  return out


def _summary(samples_by_round: List[List[float]]) -> Dict[str, Any]:
  flat = [t for r in samples_by_round for t in r]
  return {'median': statistics.median(flat), 'n': len(flat),
          'p10': sorted(flat)[(len(flat) - 1) // 10],
          'round_medians': [statistics.median(r) for r in samples_by_round],
          'min': min(flat), 'max': max(flat)}


def _steady(names, fns, states, batch, settings, block):
  """Interleaved timing of `state, out = fn(state, batch)` per name."""
  times = {n: [] for n in names}
  for r in range(settings.rounds):
    for n in rotate(names, r):
      fn, state, samples = fns[n], states[n], []
      for _ in range(settings.steps):
        start = time.perf_counter()
        state, out = fn(state, batch)
        block(out).block_until_ready()
        samples.append(time.perf_counter() - start)
      states[n] = state
      times[n].append(samples)
  return {n: _summary(t) for n, t in times.items()}, states


def run_workload(workload, settings: Settings, log=print) -> Dict[str, Any]:
  """Measures `workload`; returns a JSON-ready dict of raw figures."""
  names = [n for n in settings.impls if n in workload.impls]
  if 'plain_jax' not in names:
    raise ValueError('the plain_jax implementation is the reference: keep it')
  impls = {n: workload.impls[n]() for n in names}
  batch = jax.block_until_ready(workload.make_batch(
      jax.random.PRNGKey(DATA_SEED)))
  rng = jax.random.PRNGKey(PARAM_SEED)
  params, stats = jax.block_until_ready(impls['plain_jax'].init(rng, batch))
  result = {n: {'first_step': []} for n in names}

  if settings.warm_compile:
    # Process-wide one-time work (GPU autotuning of convolutions and
    # matmuls, cached per process and shape) must not fall on whichever
    # implementation compiles first.
    log('  warm-up compile of the plain JAX step (untimed)')
    first_step(impls['plain_jax'], params, stats, batch)
    jax.clear_caches()

  # Cold rounds: the first step; the first round checks.
  log(f'  cold: first step x {settings.cold_rounds}')
  train, states = {}, {}
  for r in range(settings.cold_rounds):
    firsts = {}
    for n in rotate(names, r):
      impl, res = impls[n], result[n]
      phases, xla, compiled, state, loss = first_step(impl, params, stats,
                                                      batch)
      res['first_step'].append(phases)
      if r == 0:
        res['xla'] = xla
        firsts[n] = (impl, state, loss)
        # The steady state goes on from here, with this executable.
        train[n], states[n] = compiled, state
      del state
    if r == 0:
      check = check_equivalence(workload, params, stats, firsts, log)
      del firsts

  # Steady state and eval, interleaved.
  log(f'  steady state: {settings.rounds} rounds x {settings.steps} steps')
  for n in names:
    for _ in range(settings.warmup):
      states[n], loss = train[n](states[n], batch)
    loss.block_until_ready()
  steady, states = _steady(names, train, states, batch, settings,
                           block=lambda loss: loss)
  final_loss = {}
  for n in names:  # the implementations should follow the same trajectory
    states[n], loss = train[n](states[n], batch)
    final_loss[n] = float(loss)
  evals = {n: jax.jit(impls[n].eval_step) for n in names}
  ev_fns = {n: (lambda s, b, f=evals[n]: (s, f(s, b))) for n in names}
  for n in names:
    ev_fns[n](states[n], batch)[1]['loss'].block_until_ready()
  ev, _ = _steady(names, ev_fns, states, batch, settings,
                  block=lambda m: m['loss'])
  for n in names:
    result[n]['step_s'] = steady[n]
    result[n]['eval_s'] = ev[n]
    result[n]['loss_after_steps'] = final_loss[n]
  del states
  jax.clear_caches()
  return {'title': workload.title, 'config': workload.config,
          'unit': workload.unit, 'items_per_step': workload.items_per_step,
          'flops_per_step': workload.flops_per_step, 'check': check,
          'impls': result}


def run_init(workload, settings: Settings, log=print):
  """Cold and warm `init_by_shape` of flaxish vs Linen's `init` on ones.

  Returns None without Linen. Each cold call follows `jax.clear_caches()`;
  the warm rounds follow one untimed call of each implementation. Both
  results must have the parameter layout of plain JAX's.
  """
  names = [n for n in ('flaxish', 'linen') if n in settings.impls and
           n in workload.impls]
  if names != ['flaxish', 'linen']:
    return None
  impls = {n: workload.impls[n]() for n in names}
  rng = jax.random.PRNGKey(PARAM_SEED)
  layout = _shapes(jax.eval_shape(workload.impls['plain_jax']().init_by_shape,
                                  rng))
  log(f'  init: cold x {settings.init_rounds}, warm x '
      f'{settings.warm_init_rounds}')
  times = {n: {'cold_s': [], 'warm_s': []} for n in names}
  for mode, rounds in (('cold_s', settings.init_rounds),
                       ('warm_s', settings.warm_init_rounds)):
    if mode == 'warm_s':  # the last cold round cleared the others' caches
      for n in names:
        jax.block_until_ready(impls[n].init_by_shape(rng))
    for r in range(rounds):
      for n in rotate(names, r):
        if mode == 'cold_s':
          jax.clear_caches()
        t, out = _timed(functools.partial(impls[n].init_by_shape, rng))
        times[n][mode].append(t)
        if _shapes(out) != layout:
          raise CheckError(f'{workload.name}/{n}: init_by_shape gives '
                           'another parameter layout than plain JAX')
  jax.clear_caches()
  return {'title': workload.title, 'impls': times}


def run_call_overhead(overhead, settings: Settings, log=print):
  """Median time of one un-jitted call per implementation, interleaved."""
  names = [n for n in settings.impls if n in overhead.calls]
  ref = np.asarray(overhead.calls['plain_jax']())
  for n in names:
    out = np.asarray(overhead.calls[n]())
    if not np.allclose(out, ref, rtol=1e-5, atol=1e-5):
      raise CheckError(f'mlp/{n}: output differs from plain JAX')
    for _ in range(3):  # warm up the eager op caches
      jax.block_until_ready(overhead.calls[n]())
  log(f'  un-jitted calls: {settings.call_rounds} rounds x '
      f'{settings.calls} calls')
  times = {n: [] for n in names}
  for r in range(settings.call_rounds):
    for n in rotate(names, r):
      fn, samples = overhead.calls[n], []
      for _ in range(settings.calls):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        samples.append(time.perf_counter() - start)
      times[n].append(samples)
  return {'title': overhead.title, 'config': overhead.config,
          'impls': {n: {'call_s': _summary(t)} for n, t in times.items()}}
