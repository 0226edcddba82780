"""Tests of the CPU-settings benchmark's bookkeeping (nothing is timed)."""
import numpy as np
import pytest

from benchmarks import bench_cpu_flags as bench
from benchmarks import cpu_flags_numerics as numerics


def _samples(times_by_config):
  return {'w': {c: [{'times': list(t)} for t in rounds]
                for c, rounds in times_by_config.items()}}


def test_ratios_are_per_round_then_median():
  samples = _samples({'jax': [[1., 1., 1.], [2., 2., 2.], [4., 4., 4.]],
                      'flaxish': [[0.5, 0.5, 0.5], [1.5, 1.5, 1.5],
                                  [1., 1., 1.]],
                      'pytorch': [[1., 1., 1.], [1., 1., 1.], [1., 1., 1.]]})
  summary = bench.summarize(samples, ['jax', 'flaxish', 'pytorch'])['w']
  # per-round flaxish / jax: 0.5, 0.75, 0.25 -> median 0.5
  assert summary['flaxish']['ratio'] == pytest.approx(0.5)
  assert summary['flaxish']['ratio_range'] == [0.25, 0.75]
  assert summary['flaxish']['median_ms'] == pytest.approx(1000.)
  assert summary['flaxish/pytorch']['ratio'] == pytest.approx(1.0)
  text = bench.render({'mnist_cnn': summary}, ['jax', 'flaxish', 'pytorch'],
                      dict(machine='m', load='1', versions={}, rounds=3,
                           steps=3, warmup=1, defaults='--x'))
  assert '| `flaxish` / `pytorch` |' in text
  assert '0.500 [0.25-0.75]' in text


def test_a_failed_round_is_left_out_of_the_ratios():
  samples = _samples({'jax': [[1.], [1.]], 'flaxish': [[2.], [3.]]})
  samples['w']['flaxish'][1] = {'error': 'boom'}
  summary = bench.summarize(samples, ['jax', 'flaxish'])['w']
  assert summary['flaxish']['ratio'] == pytest.approx(2.)


def test_config_environments():
  candidates = {'c': '--xla_foo=1'}
  assert bench._config_env('jax', candidates) == {bench.OPT_OUT: '0'}
  assert bench._config_env('flaxish', candidates) == {}
  assert bench._config_env('jax+defaults', candidates) == {}
  assert bench._config_env('c', candidates) == {
      bench.OPT_OUT: '0', 'XLA_FLAGS': '--xla_foo=1'}
  assert bench._impl_of('c', candidates) == 'plain_jax'
  assert bench._impl_of('flaxish', candidates) == 'flaxish'


def test_jax_worker_trains():
  out = bench._jax_worker('mnist_cnn', 'flaxish', {'batch': 4}, warmup=1,
                          steps=2)
  assert len(out['times']) == 2 and len(out['losses']) == 3
  assert all(np.isfinite(out['losses']))


def test_numerics_flatten_round_trip():
  tree = {'a': {'b': np.arange(3.), 'c': np.ones((2, 2))}, 'd': np.zeros(1)}
  flat = numerics._flatten(tree)
  assert sorted(flat) == ['a/b', 'a/c', 'd']
  back = numerics._unflatten(flat)
  np.testing.assert_array_equal(back['a']['c'], tree['a']['c'])
  assert numerics._rel(np.array([1., 1.]), np.array([1., 1.])) == 0.


def test_pytorch_configs_run_the_pytorch_worker():
  assert bench._impl_of('pytorch-explicit-attention', {}) == 'pytorch'
  assert bench._config_env('pytorch-explicit-attention', {}) == {
      bench.OPT_OUT: '0'}


def test_plain_dense_grad_ablation_removes_the_written_out_transpose(
    monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flaxish.nn import _dense_dot  # pylint: disable=g-import-not-at-top
  # Restored after the test: the ablation patches the module for good.
  monkeypatch.setattr(_dense_dot, '_kernel_tangent',
                      _dense_dot._kernel_tangent)
  x, k = jnp.ones((8, 4)), jnp.ones((4, 2))

  def grad_hlo():
    grad = jax.jit(jax.grad(
        lambda k: jnp.sum(_dense_dot.dense_dot(x, k, (1,)) ** 2)))
    return grad.trace(k).lower(lowering_platforms=('cpu',)).as_text()

  assert 'optimization_barrier' in grad_hlo()
  bench._plain_dense_grad()  # pylint: disable=protected-access
  assert 'optimization_barrier' not in grad_hlo()
  assert bench._impl_of('flaxish-plain-dense-grad', {}) == (  # pylint: disable=protected-access
      'flaxish-plain-dense-grad')
