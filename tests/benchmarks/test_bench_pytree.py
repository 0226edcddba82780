"""bench_pytree: the measured trees are the implementations' train states."""
import jax

from benchmarks import bench_pytree
from benchmarks import workloads


def test_measures_each_train_state_tree():
  res = bench_pytree.measure('mnist_cnn', 'tiny', ['flaxish', 'plain_jax'],
                             rounds=1, calls=3)
  assert set(res) == {'flaxish', 'plain_jax'}
  # flaxish's Optimizer also carries the step counter.
  assert res['flaxish']['leaves'] == res['plain_jax']['leaves'] + 1
  w = workloads.build('mnist_cnn', 'tiny')
  params, _ = w.impls['plain_jax']().init(
      jax.random.PRNGKey(0), w.make_batch(jax.random.PRNGKey(1)))
  # plain JAX's state: the params and one momentum per param.
  assert res['plain_jax']['leaves'] == 2 * len(jax.tree_util.tree_leaves(
      params))
  for r in res.values():
    assert r['flatten'] > 0 and r['unflatten'] > 0


def test_main_prints_a_row_per_implementation(capsys):
  bench_pytree.main(['--workloads=mnist_cnn', '--impls=flaxish,plain_jax',
                     '--preset=tiny', '--rounds=1', '--calls=2'])
  out = capsys.readouterr().out
  assert '| mnist_cnn | flaxish | 17 |' in out
  assert '| mnist_cnn | plain JAX | 16 |' in out and '1.00x |' in out
