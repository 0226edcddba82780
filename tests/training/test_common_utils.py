"""Tests for flaxish.training.common_utils (8 fake CPU devices)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish.training import common_utils


def test_shard():
  batch = {'image': np.arange(16 * 3).reshape(16, 3), 'label': np.arange(16)}
  sharded = common_utils.shard(batch)
  assert sharded['image'].shape == (8, 2, 3)
  assert sharded['label'].shape == (8, 2)
  np.testing.assert_array_equal(sharded['label'][3], [6, 7])


def test_shard_not_divisible():
  with pytest.raises(ValueError, match=r'batch dimension of /label '
                     r'\(shape \(10,\)\) is not divisible by the 8 local '
                     'devices; use a batch size that is a multiple of 8'):
    common_utils.shard({'label': np.zeros(10)})


@pytest.mark.parametrize('make_key', [jax.random.PRNGKey, jax.random.key])
def test_shard_prng_key(make_key):
  keys = common_utils.shard_prng_key(make_key(0))
  assert keys.shape[0] == 8
  values = jax.pmap(lambda k: jax.random.uniform(k))(keys)
  assert len(set(np.asarray(values).tolist())) == 8


def test_onehot():
  out = common_utils.onehot(np.array([[0, 2], [1, 1]]), 3, on_value=5.,
                            off_value=-1.)
  assert out.dtype == jnp.float32 and out.shape == (2, 2, 3)
  expected = np.full((2, 2, 3), -1.)
  expected[0, 0, 0] = expected[0, 1, 2] = 5.
  expected[1, 0, 1] = expected[1, 1, 1] = 5.
  np.testing.assert_array_equal(out, expected)


def test_stack_forest():
  forest = [{'a': np.array(1.), 'b': (np.ones(2),)},
            {'a': np.array(2.), 'b': (np.zeros(2),)}]
  stacked = common_utils.stack_forest(forest)
  np.testing.assert_array_equal(stacked['a'], [1., 2.])
  np.testing.assert_array_equal(stacked['b'][0], [[1, 1], [0, 0]])
  with pytest.raises(ValueError, match='empty list'):
    common_utils.stack_forest([])


def test_get_metrics_takes_replica_0():
  step = jax.pmap(lambda x: {'loss': x * 2., 'acc': x + 1.})
  per_step = [step(jnp.arange(8.) + 10 * i) for i in range(3)]
  metrics = common_utils.get_metrics(per_step)
  assert isinstance(metrics['loss'], np.ndarray)
  np.testing.assert_allclose(metrics['loss'], [0., 20., 40.])
  np.testing.assert_allclose(metrics['acc'], [1., 11., 21.])
