"""Tests of flaxish.nn._param_init: initial values are bit-identical to an
eager computation from independently derived keys, however they are made."""
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from flaxish.nn import _param_init

init = jax.nn.initializers


def _fold(key, *names):
  """Reference 1.1: fold in the first 4 bytes (big-endian) of SHA-1(name)."""
  for name in names:
    h = int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], 'big')
    key = jax.random.fold_in(key, h)
  return key


class Noisy(nn.Module):
  """State drawn from the frame's key with two splits (reference 1.1)."""

  def apply(self, x):
    a = self.state('a', (3,), init.normal(1.0))
    b = self.state('b', (2,), init.uniform(1.0))
    return x + a.value.sum() + b.value.sum()


class Zoo(nn.Module):
  """One of each layer whose initial values users rely on."""

  def apply(self, x, tokens):
    y = nn.Dense(x, 6, name='dense')
    y = nn.Dense(y, 5, param_dtype=jnp.bfloat16, name='dense_bf16')
    y = nn.Dense(y, 4, kernel_init=init.orthogonal(), bias_init=init.normal(
        0.5), name='ortho')
    y = nn.LayerNorm(y, name='ln')
    y = nn.DenseGeneral(y.reshape(2, 1, 4), 3, batch_dims=0, name='batched')
    emb = nn.Embed(tokens, 7, 4, name='embed')
    return y.sum() + emb.sum() + Noisy(x.sum(), name='noisy')


X = jnp.arange(8, dtype=jnp.float32).reshape(2, 4) / 8
TOKENS = jnp.array([[1, 2, 3]])


def _reference(rng):
  """Every parameter and state value computed eagerly from `_fold` keys."""
  lecun = init.lecun_normal()
  k = lambda *names: _fold(rng, *names)
  batched = []
  for key in jax.random.split(k('batched', 'kernel'), 2):
    batched.append(lecun(key, (4, 3), jnp.float32))
  batched_bias = [init.zeros(key, (3,), jnp.float32)
                  for key in jax.random.split(k('batched', 'bias'), 2)]
  params = {
      'dense': {'kernel': lecun(k('dense', 'kernel'), (4, 6)),
                'bias': jnp.zeros((6,))},
      'dense_bf16': {
          'kernel': jnp.asarray(lecun(k('dense_bf16', 'kernel'), (6, 5)),
                                jnp.bfloat16),
          'bias': jnp.zeros((5,), jnp.bfloat16)},
      'ortho': {'kernel': init.orthogonal()(k('ortho', 'kernel'), (5, 4)),
                'bias': init.normal(0.5)(k('ortho', 'bias'), (4,))},
      'ln': {'scale': jnp.ones((4,)), 'bias': jnp.zeros((4,))},
      'batched': {'kernel': jnp.stack(batched),
                  'bias': jnp.stack(batched_bias)},
      'embed': {'embedding': init.variance_scaling(
          1.0, 'fan_in', 'normal', out_axis=0)(k('embed', 'embedding'),
                                                (7, 4))},
      'noisy': {},
  }
  frame_key, key_a = jax.random.split(k('noisy'))
  _, key_b = jax.random.split(frame_key)
  state = {'/noisy': {'a': init.normal(1.0)(key_a, (3,)),
                      'b': init.uniform(1.0)(key_b, (2,))}}
  return params, state


def _assert_identical(actual, expected):
  assert (jax.tree_util.tree_structure(actual) ==
          jax.tree_util.tree_structure(expected))

  def check(a, e):
    assert jnp.result_type(a) == jnp.result_type(e)
    np.testing.assert_array_equal(np.asarray(a, np.float32),
                                  np.asarray(e, np.float32))

  jax.tree_util.tree_map(check, actual, expected)


@pytest.mark.parametrize('make_key', [jax.random.PRNGKey, jax.random.key],
                         ids=['raw_key', 'typed_key'])
def test_init_and_init_by_shape_match_an_eager_reference_bit_for_bit(
    make_key):
  rng = make_key(11)
  expected_params, expected_state = _reference(rng)
  with nn.stateful() as state:
    _, params = Zoo.init(rng, X, TOKENS)
  _assert_identical(params, expected_params)
  _assert_identical(state.as_dict(), expected_state)
  with nn.stateful() as state:
    _, params = Zoo.init_by_shape(rng, [X.shape, (TOKENS.shape, jnp.int32)])
  _assert_identical(params, expected_params)
  _assert_identical(state.as_dict(), expected_state)
  for leaf in jax.tree_util.tree_leaves((params, state.as_dict())):
    assert not isinstance(leaf, jax.core.Tracer)


def test_init_with_a_traced_rng_matches_the_reference():
  rng = jax.random.PRNGKey(5)
  expected_params, _ = _reference(rng)

  def make(r):
    with nn.stateful():
      return Zoo.init(r, X, TOKENS)[1]

  _assert_identical(jax.jit(make)(rng), expected_params)


def test_initializers_that_differ_only_in_settings_are_not_confused():
  # Equal code, different closure values: each must get its own program.
  class Net(nn.Module):
    def apply(self, x, stddev, dtype):
      return nn.Dense(x, 3, kernel_init=init.normal(stddev, dtype=dtype),
                      name='d')

  rng = jax.random.PRNGKey(0)
  key = _fold(rng, 'd', 'kernel')
  for stddev in (1.0, 2.0, 1, -0.0):
    for dtype in (jnp.float32, jnp.bfloat16):
      _, params = Net.init_by_shape(rng, [X.shape], stddev=stddev,
                                    dtype=dtype)
      expected = jnp.asarray(init.normal(stddev, dtype)(key, (4, 3)),
                             jnp.float32)
      _assert_identical(params['d']['kernel'], expected)


def test_user_initializers_run_eagerly_once_on_a_concrete_key():
  calls = []

  def my_init(key, shape):
    calls.append(isinstance(key, jax.core.Tracer))
    return 1.5  # not an array: kept as it is

  class Net(nn.Module):
    def apply(self, x):
      return x * self.param('w', (), my_init)

  _, params = Net.init_by_shape(jax.random.PRNGKey(0), [(2,)])
  assert calls == [False]
  assert type(params['w']) is float and params['w'] == 1.5


def test_repeated_init_reuses_the_compiled_initializers():
  class Net(nn.Module):
    def apply(self, x):
      # New initializer closures on every call, equal in value.
      return nn.Dense(x, 3, kernel_init=init.normal(0.02),
                      bias_init=init.constant(0.1))

  Net.init_by_shape(jax.random.PRNGKey(0), [X.shape])
  before = len(_param_init._compiled)  # pylint: disable=protected-access
  _, params = Net.init_by_shape(jax.random.PRNGKey(1), [X.shape])
  assert len(_param_init._compiled) == before  # pylint: disable=protected-access
  key = _fold(jax.random.PRNGKey(1), 'Dense_0', 'kernel')
  _assert_identical(params['Dense_0']['kernel'],
                    init.normal(0.02)(key, (4, 3)))
  _assert_identical(params['Dense_0']['bias'], jnp.full((3,), 0.1))


@pytest.mark.parametrize('initializer', [
    init.normal(0.02), init.normal(0.3, jnp.bfloat16), init.uniform(0.07),
    init.truncated_normal(0.02), init.constant(0.1), init.ones,
    init.lecun_normal(), init.glorot_uniform(), init.he_normal(),
    init.variance_scaling(2.0, 'fan_in', 'normal'),
    init.variance_scaling(0.3, 'fan_avg', 'uniform'),
    init.variance_scaling(1.7, 'fan_out', 'truncated_normal'),
    init.orthogonal(1.3)], ids=lambda i: getattr(i, '__qualname__', '?'))
def test_every_library_initializer_gives_its_eager_value(initializer):
  shape = (129, 3)
  class Net(nn.Module):
    def apply(self, x):
      return self.param('w', shape, initializer)

  rng = jax.random.PRNGKey(2)
  expected = initializer(_fold(rng, 'w'), shape)
  _assert_identical(Net.init(rng, X)[1]['w'], expected)
  _assert_identical(Net.init_by_shape(rng, [X.shape])[1]['w'], expected)


class StateThenParam(nn.Module):
  """Random state, then a parameter, then more state: the parameter's key
  comes from the frame key after one split (reference 1.1)."""

  def apply(self, x):
    a = self.state('a', (3,), init.normal(1.0))
    w = self.param('w', (3,), init.uniform(1.0))
    b = self.state('b', (2,), init.normal(0.5))
    z = self.state('z', (2,), init.zeros)
    return x + a.value.sum() + w.sum() + b.value.sum() + z.value.sum()


def _state_then_param_reference(rng):
  k1, key_a = jax.random.split(rng)  # the root frame's key is the rng
  _, key_b = jax.random.split(k1)
  params = {'w': init.uniform(1.0)(_fold(k1, 'w'), (3,))}
  state = {'/net': {'a': init.normal(1.0)(key_a, (3,)),
                    'b': init.normal(0.5)(key_b, (2,)),
                    'z': jnp.zeros((2,))}}
  return params, state


@pytest.mark.parametrize('how', ['init', 'init_by_shape', 'jit_init'])
def test_split_keys_match_the_eager_splits(how):
  rng = jax.random.PRNGKey(4)
  expected_params, expected_state = _state_then_param_reference(rng)

  def run(r):
    with nn.stateful() as state:
      if how == 'init_by_shape':
        _, params = StateThenParam.init_by_shape(r, [()], name='net')
      else:
        _, params = StateThenParam.init(r, jnp.float32(1.), name='net')
    return params, state.as_dict()

  params, state = jax.jit(run)(rng) if how == 'jit_init' else run(rng)
  _assert_identical(params, expected_params)
  _assert_identical(state, expected_state)


def test_lazy_keys_compute_nothing_until_materialized():
  rng = jax.random.PRNGKey(3)
  left, right = _param_init.split(_param_init.fold_in_name(rng, 'a'))
  assert isinstance(left, _param_init.LazyKey)
  assert isinstance(right, _param_init.LazyKey)
  expected = jax.random.split(_fold(rng, 'a'))
  np.testing.assert_array_equal(_param_init.materialize(left), expected[0])
  np.testing.assert_array_equal(_param_init.materialize(right), expected[1])
  leaf = _param_init.fold_in_name(right, 'b')
  np.testing.assert_array_equal(_param_init.materialize(leaf),
                                _fold(expected[1], 'b'))


def test_zeros_and_ones_are_filled_on_the_host_without_a_program():
  class Net(nn.Module):
    def apply(self, x):
      z = self.param('z', (3, 5), init.zeros)
      o = self.param('o', (3, 5), init.ones)
      y = nn.Dense(x, 13, name='d') + nn.Dense(x, 13, param_dtype=jnp.bfloat16,
                                               name='h')
      return nn.LayerNorm(y + z.sum() + o.sum(), name='ln')

  before = len(_param_init._compiled)  # pylint: disable=protected-access
  rng = jax.random.PRNGKey(0)
  _, params = Net.init_by_shape(rng, [X.shape])
  # Only the float32 kernel compiled (a bfloat16 one stays eager).
  assert len(_param_init._compiled) == before + 1  # pylint: disable=protected-access
  key = jax.random.PRNGKey(0)  # zeros/ones ignore it
  _assert_identical(params['z'], init.zeros(key, (3, 5)))
  _assert_identical(params['o'], init.ones(key, (3, 5)))
  _assert_identical(params['d']['bias'], jnp.zeros((13,)))
  _assert_identical(params['h']['bias'], jnp.zeros((13,), jnp.bfloat16))
  _assert_identical(params['ln'], {'scale': jnp.ones((13,)),
                                   'bias': jnp.zeros((13,))})
  leaves = jax.tree_util.tree_leaves(params)
  assert all(isinstance(leaf, jax.Array) for leaf in leaves)
  # Every parameter owns its buffer: deleting (or donating) one leaves the
  # others, equal in value, intact.
  params['z'].delete()
  np.testing.assert_array_equal(params['ln']['bias'], np.zeros(13))


def test_a_bad_shape_for_zeros_gives_the_initializers_own_error():
  class Net(nn.Module):
    def apply(self, x):
      return self.param('z', (2, -1), init.zeros)

  with pytest.raises(TypeError) as expected:
    init.zeros(None, (2, -1))
  with pytest.raises(TypeError) as raised:
    Net.init(jax.random.PRNGKey(0), X)
  assert str(raised.value) == str(expected.value)


def test_zeros_without_a_dtype_follow_the_x64_default():
  class Net(nn.Module):
    def apply(self, x):
      return self.param('z', (2,), init.zeros)

  with jax.enable_x64(True):
    _, params = Net.init(jax.random.PRNGKey(0), X)
    assert params['z'].dtype == init.zeros(None, (2,)).dtype == jnp.float64
  _, params = Net.init(jax.random.PRNGKey(0), X)
  assert params['z'].dtype == jnp.float32


_SHAPE_CASES = [(i, s) for s in [(256, 10), (3, 3, 8, 16), (2048, 512)]
                for i in (init.lecun_normal(), init.he_normal(),
                          init.variance_scaling(1.7, 'fan_out',
                                                'truncated_normal'))]
_SHAPE_CASES += [(i, (1000,)) for i in (init.normal(0.02), init.uniform(0.07),
                                        init.truncated_normal(0.1))]


@pytest.mark.parametrize('initializer,shape', _SHAPE_CASES)
def test_compiled_initializers_match_eager_on_more_shapes(initializer, shape):
  """XLA:CPU vectorizes small and large shapes differently; at the reduced
  LLVM optimization level the values stay those of eager execution."""
  class Net(nn.Module):
    def apply(self, x):
      return self.param('w', shape, initializer)

  rng = jax.random.PRNGKey(7)
  expected = initializer(_fold(rng, 'w'), shape)
  _assert_identical(Net.init_by_shape(rng, [X.shape])[1]['w'], expected)


def test_other_backends_run_the_initializers_eagerly(monkeypatch):
  """Where compiled arithmetic may differ from eager (a GPU's FMAs), only
  the key is computed in one call; the initializer runs eagerly."""
  monkeypatch.setattr(_param_init, '_initializers_compile_exactly',
                      lambda: False)

  class Net(nn.Module):
    def apply(self, x):
      return nn.Dense(x, 7, kernel_init=init.normal(0.37), name='d')

  before = len(_param_init._compiled)  # pylint: disable=protected-access
  rng = jax.random.PRNGKey(11)
  _, params = Net.init_by_shape(rng, [X.shape])
  assert len(_param_init._compiled) == before  # pylint: disable=protected-access
  _assert_identical(params['d']['kernel'],
                    init.normal(0.37)(_fold(rng, 'd', 'kernel'),
                                      (X.shape[-1], 7)))
