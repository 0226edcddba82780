"""Tests of the benchmark harness: the workloads' flaxish and plain-JAX
versions compute the same thing, and the runner writes its JSON and Markdown.

Tiny sizes only; nothing here is timed or asserts on timings.
"""
import dataclasses
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import cpu_defaults
from benchmarks import bench
from benchmarks import harness
from benchmarks import memory
from benchmarks import report
from benchmarks import workloads

# The ResNets keep their stems and blocks (basic, bottleneck) but get one
# block per stage, and the LM one layer, to keep the compiles short.
TINY = {
    'mnist_cnn': lambda: workloads.build('mnist_cnn', 'tiny'),
    'resnet18': lambda: workloads.build('resnet18', 'tiny', width=4,
                                        stages=(1, 1, 1, 1)),
    'resnet50': lambda: workloads.build('resnet50', 'tiny', width=4,
                                        stages=(1, 1, 1, 1)),
    'transformer_lm': lambda: workloads.build('transformer_lm', 'tiny',
                                              layers=1),
}
# Correctness only: a quick, unoptimized compile.
FAST_COMPILE = {'xla_backend_optimization_level': 0,
                'xla_llvm_disable_expensive_passes': True}


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _fast_jit(fn, *args):
  """`fn(*args)` through one quick, unoptimized compile (no eager ops)."""
  return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


@pytest.mark.parametrize('name', sorted(TINY))
def test_flaxish_and_plain_jax_give_the_same_loss_and_gradients(name):
  w = TINY[name]()
  flaxish, plain = w.impls['flaxish'](), w.impls['plain_jax']()
  rng = jax.random.PRNGKey(0)
  batch = _fast_jit(w.make_batch, jax.random.PRNGKey(1))
  params, stats = _fast_jit(plain.init, rng, batch)
  # flaxish's parameter layout, from an abstract trace of its init.
  assert jax.eval_shape(flaxish.init, rng, batch) == jax.eval_shape(
      plain.init, rng, batch)

  def loss_and_grads(params, stats, batch):
    grad_fn = lambda impl: jax.value_and_grad(impl.loss, has_aux=True)
    return grad_fn(flaxish)(params, stats, batch), grad_fn(plain)(
        params, stats, batch)

  compiled = jax.jit(loss_and_grads).lower(params, stats, batch).compile(
      FAST_COMPILE)
  ((f_loss, f_new), f_grads), ((p_loss, p_new), p_grads) = compiled(
      params, stats, batch)
  np.testing.assert_allclose(f_loss, p_loss, rtol=1e-5)
  assert jax.tree_util.tree_structure(f_grads) == (
      jax.tree_util.tree_structure(p_grads))
  for a, b in zip(_leaves(f_grads), _leaves(p_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for a, b in zip(_leaves(f_new), _leaves(p_new)):  # BatchNorm statistics
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_steps_agree_after_one_update():
  w = TINY['mnist_cnn']()
  batch = _fast_jit(w.make_batch, jax.random.PRNGKey(1))
  params, stats = _fast_jit(w.impls['plain_jax']().init, jax.random.PRNGKey(0),
                            batch)
  out = {}
  for name in ('flaxish', 'plain_jax'):
    impl = w.impls[name]()
    state = impl.make_state(jax.tree_util.tree_map(jnp.copy, params), stats)
    state, loss = jax.jit(impl.train_step).lower(state, batch).compile(
        FAST_COMPILE)(state, batch)
    out[name] = (float(loss), impl.params_of(state))
  assert out['flaxish'][0] == pytest.approx(out['plain_jax'][0], rel=1e-6)
  for a, b in zip(_leaves(out['flaxish'][1]), _leaves(out['plain_jax'][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_runner_writes_json_and_markdown_rows(tmp_path):
  json_path, md_path = tmp_path / 'cpu.json', tmp_path / 'RESULTS.md'
  bench.main(['--preset=tiny', '--workloads=mnist_cnn,mlp', '--memory=none',
              '--init-workloads=',
              '--impls=flaxish,plain_jax,plain_jax_again',
              f'--json={json_path}', f'--markdown={md_path}'])
  results = json.loads(json_path.read_text())
  meta = results['meta']
  assert meta['preset'] == 'tiny'
  # The settings every column ran with are recorded.
  assert meta['xla_flags'] == os.environ.get('XLA_FLAGS', '')
  assert meta['cpu_defaults'] == 'off'
  assert meta['versions']['jax'] == jax.__version__
  assert len(meta['commit'].rstrip('+')) >= 7
  mnist = results['workloads']['mnist_cnn']
  for name in ('flaxish', 'plain_jax'):
    figures = mnist['impls'][name]
    assert len(figures['step_s']['round_medians']) == 1
    assert figures['first_step'][0]['total'] > 0
    assert figures['xla']['peak_bytes'] > 0
  assert mnist['check']['impls']['flaxish']['update'] < 1e-3
  assert mnist['check']['impls']['plain_jax_again']['update'] == 0
  assert set(results['call_overhead']['impls']) >= {'flaxish', 'plain_jax'}
  text = md_path.read_text()
  assert f'- Every column: `XLA_FLAGS={meta["xla_flags"]}`; flaxish CPU ' \
         'defaults: off' in text
  assert '### mnist_cnn: MNIST CNN, batch 4' in text
  assert '| steady-state train step |' in text
  assert '| plain JAX again | flaxish / plain JAX | ' \
         'plain JAX again / plain JAX |' in text
  assert '; control ' in text  # beside the steady-state goal's ratio
  assert 'steady-state train step <= 1.02x plain JAX' in text
  assert '### mlp:' in text


def test_cpu_defaults_option_applies_the_flags_to_the_whole_run(tmp_path):
  json_path = tmp_path / 'cpu.json'
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', cpu_defaults.ENV)}
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  subprocess.run([sys.executable, '-m', 'benchmarks.bench', '--preset=tiny',
                  '--workloads=mlp', '--init-workloads=', '--memory=none',
                  '--impls=flaxish,plain_jax', '--cpu-defaults',
                  f'--json={json_path}', '--markdown='],
                 cwd=repo, env=env, check=True, timeout=600,
                 capture_output=True)
  meta = json.loads(json_path.read_text())['meta']
  flags = cpu_defaults.flags_for_this_jaxlib()
  assert meta['xla_flags'] == ' '.join(flags)
  assert meta['cpu_defaults'] == ('applied' if flags else 'not measured')


def test_memory_child_reports_a_peak():
  out = memory.measure('mnist_cnn', 'flaxish', 'tiny', steps=1)
  assert 'error' not in out, out
  assert out['peak_bytes'] >= out['state_bytes'] > 0


def test_memory_child_failure_and_timeout_become_errors():
  out = memory.measure('no_such_workload', 'flaxish', 'tiny', steps=1)
  assert "unknown workload 'no_such_workload'" in out['error']
  out = memory.measure('mnist_cnn', 'flaxish', 'tiny', steps=1, timeout=0.01)
  assert out == {'error': 'timed out after 0.01 s'}


def _with_linen_stand_in(workload, linen_factory):
  # Plain JAX stands in for Linen (flax need not be installed), which
  # is enough to test the timing loop and its layout check.
  return dataclasses.replace(workload, impls={**workload.impls,
                                              'linen': linen_factory})


def test_init_times_cold_and_warm_rounds_and_checks_the_layout():
  w = TINY['mnist_cnn']()
  calls = []

  def counted(impl):
    def init_by_shape(rng):
      calls.append(impl.name)
      return impl.init_by_shape(rng)
    return dataclasses.replace(impl, init_by_shape=init_by_shape)

  w = _with_linen_stand_in(
      w, lambda: counted(dataclasses.replace(w.impls['plain_jax'](),
                                             name='linen')))
  w.impls['flaxish'] = lambda f=w.impls['flaxish']: counted(f())
  settings = harness.Settings(init_rounds=2, warm_init_rounds=3)
  res = harness.run_init(w, settings, log=lambda *a: None)
  for name in ('flaxish', 'linen'):
    assert len(res['impls'][name]['cold_s']) == 2
    assert len(res['impls'][name]['warm_s']) == 3
    assert all(t > 0 for t in res['impls'][name]['cold_s'])
  # Interleaved cold rounds, one untimed warm-up call each, warm rounds.
  assert calls == ['flaxish', 'linen', 'linen', 'flaxish', 'flaxish',
                   'linen', 'flaxish', 'linen', 'linen', 'flaxish',
                   'flaxish', 'linen']
  no_linen = dataclasses.replace(w, impls={
      n: f for n, f in w.impls.items() if n != 'linen'})
  assert harness.run_init(no_linen, settings) is None

  plain = w.impls['plain_jax']()
  wrong = dataclasses.replace(plain, init_by_shape=lambda rng: (
      {'dense': {'kernel': jnp.zeros((2, 2))}}, {}))
  w = _with_linen_stand_in(w, lambda: wrong)
  with pytest.raises(harness.CheckError,
                     match='mnist_cnn/linen: init_by_shape gives another '
                     'parameter layout than plain JAX'):
    harness.run_init(w, settings, log=lambda *a: None)


def test_check_stops_the_run_when_an_implementation_differs():
  impl = types.SimpleNamespace(params_of=lambda state: state,
                               stats_of=lambda state: {})
  w = types.SimpleNamespace(name='w', tolerance=None)
  params = {'dense': jnp.ones(3)}
  firsts = {'plain_jax': (impl, {'dense': jnp.zeros(3)}, 1.),
            'flaxish': (impl, {'dense': jnp.full(3, .5)}, 1.)}
  with pytest.raises(harness.CheckError, match='w: flaxish and plain JAX '
                     'differ after the first train step'):
    harness.check_equivalence(w, params, {}, firsts, log=lambda *a: None)
  firsts['flaxish'] = (impl, {'conv': jnp.zeros(3)}, 1.)
  with pytest.raises(harness.CheckError, match='w/flaxish: the params after '
                     'one step do not have the layout of the initial params'):
    harness.check_equivalence(w, params, {}, firsts, log=lambda *a: None)


def test_call_overhead_refuses_an_output_other_than_plain_jax():
  overhead = types.SimpleNamespace(
      title='t', config={}, calls={'plain_jax': lambda: np.zeros(2),
                                   'flaxish': lambda: np.ones(2)})
  with pytest.raises(harness.CheckError,
                     match='mlp/flaxish: output differs from plain JAX'):
    harness.run_call_overhead(
        overhead, harness.Settings(impls=('flaxish', 'plain_jax')),
        log=lambda *a: None)


def test_bad_arguments_are_refused(tmp_path):
  with pytest.raises(ValueError, match='the plain_jax implementation is '
                     'the reference: keep it'):
    harness.run_workload(TINY['mnist_cnn'](),
                         harness.Settings(impls=('flaxish',)))
  with pytest.raises(ValueError, match="unknown preset 'huge'"):
    workloads.build('mnist_cnn', 'huge')
  with pytest.raises(SystemExit, match="--set expects WORKLOAD.FIELD=VALUE, "
                     "got 'resnet50=32'"):
    bench.main(['--preset=tiny', '--set', 'resnet50=32',
                f'--json={tmp_path / "cpu.json"}', '--markdown='])
  assert not list(tmp_path.iterdir())


def test_report_gives_init_ratios_against_linen():
  res = {'title': 't', 'impls': {'flaxish': {'cold_s': [2., 3., 4.],
                                             'warm_s': [1., 1.]},
                                 'linen': {'cold_s': [2., 2., 2.],
                                           'warm_s': [2., 2.]}}}
  results = {'meta': {'label': 'CPU', 'platform': 'cpu'}, 'workloads': {},
             'init': {'resnet18': res}}
  assert report.init_ratio(res) == (1.5, [1., 1.5, 2.])
  assert report.init_ratio(res, 'warm_s') == (0.5, [0.5, 0.5])
  assert report.goal_rows(results) == [
      ['CPU', "cold `init_by_shape` <= Linen's `init`", 'resnet18',
       '1.500 (1.00-2.00)', 'missed by 50.0%']]
  assert '| resnet18 | 3.00 s | 2.00 s | 1.500 (1.00-2.00) | 1.00 s | ' \
         '2.00 s | 0.500 (0.50-0.50) |' in report.render_results(results)


def test_report_says_by_how_much_a_goal_is_missed():
  step = lambda t: {'median': t, 'round_medians': [t, t * 1.1], 'n': 2,
                    'min': t, 'max': t}
  results = {'meta': {'label': 'CPU', 'platform': 'cpu'}, 'workloads': {
      'w': {'title': 't', 'config': {}, 'unit': 'images', 'items_per_step': 1,
            'impls': {'flaxish': {'step_s': step(1.05)},
                      'plain_jax': {'step_s': step(1.0)}}}}}
  rows = report.goal_rows(results)
  assert rows == [['CPU', 'steady-state train step <= 1.02x plain JAX', 'w',
                   '1.050 (1.05-1.05)', 'missed by 2.9%']]
  # A control (plain JAX compiled again) 3% off: a 2% margin is not resolved.
  results['workloads']['w']['impls']['plain_jax_again'] = {
      'step_s': step(0.97)}
  assert report.goal_rows(results)[0][3:] == [
      '1.050 (1.05-1.05); control 0.970 (0.97-0.97)',
      'not resolved: the control is off by more than the margin']


def test_update_keeps_earlier_workloads_and_refuses_other_settings(tmp_path):
  json_path = tmp_path / 'cpu.json'
  common = ['--preset=tiny', '--memory=none', '--init-workloads=',
            '--impls=flaxish,plain_jax',
            f'--json={json_path}', '--markdown=']
  bench.main(common + ['--workloads=mlp'])
  bench.main(common + ['--workloads=mnist_cnn', '--update'])
  results = json.loads(json_path.read_text())
  assert set(results['workloads']) == {'mnist_cnn'}
  assert 'flaxish' in results['call_overhead']['impls']
  assert [r['workloads'] for r in results['meta']['runs']] == [
      ['mlp'], ['mnist_cnn']]
  text = report.render_results(results)
  assert '- Run (mlp):' in text and '- Run (mnist_cnn):' in text
  before = json_path.read_text()
  with pytest.raises(SystemExit, match='settings differs'):
    bench.main(common + ['--workloads=mlp', '--update', '--calls=2'])
  assert json_path.read_text() == before  # refused before writing anything


def test_update_refuses_other_xla_flags():
  meta = {'platform': 'cpu', 'xla_flags': '', 'cpu_defaults': 'off'}
  earlier = {'meta': meta, 'workloads': {}}
  later = {'meta': {**meta, 'xla_flags': '--xla_foo=1'}, 'workloads': {}}
  with pytest.raises(SystemExit, match="xla_flags differs from the earlier "
                     "run's \\('--xla_foo=1' vs ''\\)"):
    bench.merge(earlier, later)
