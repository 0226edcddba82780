"""Tests of flaxish.nn.frame: parameter and state keys, and initial values
bit-identical to an eager computation from independently derived keys,
however they are made (init, init_by_shape, under jit, inside lax.scan,
jax.checkpoint and lax.cond)."""
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from flaxish import jax_utils

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


def test_initializer_errors_reach_the_user_unchanged():
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


# ---- parameters first made inside lax.scan, jax.checkpoint, lax.cond ------

class Scanned(nn.Module):
  """An LSTM over time with `jax_utils.scan_in_dim`: the cell's parameters
  are first made inside the scan body."""

  def apply(self, x):
    carry = nn.LSTMCell.initialize_carry(jax.random.PRNGKey(0),
                                         (x.shape[0],), 4)
    cell = nn.LSTMCell.partial(name='cell')
    return jax_utils.scan_in_dim(cell, carry, x, axis=1)[1]


class LaxScanned(nn.Module):
  def apply(self, x):
    def body(carry, xt):
      return carry + nn.Dense(xt, 3, name='d').sum(), None
    return jax.lax.scan(body, 0., x)[0]


class Checkpointed(nn.Module):
  def apply(self, x):
    return jax.checkpoint(lambda v: nn.Dense(v, 3, name='d'))(x)


class Conditional(nn.Module):
  def apply(self, x):
    return jax.lax.cond(x.sum() > 0, lambda v: nn.Dense(v, 3, name='d'),
                        lambda v: jnp.zeros(v.shape[:-1] + (3,)), x)


def _lstm_reference(rng):
  k = lambda *names: _fold(rng, 'cell', *names)
  ortho, lecun = init.orthogonal(), init.lecun_normal()
  params = {}
  for gate in ('i', 'f', 'g', 'o'):
    params[f'i{gate}'] = {'kernel': lecun(k(f'i{gate}', 'kernel'), (3, 4))}
    params[f'h{gate}'] = {'kernel': ortho(k(f'h{gate}', 'kernel'), (4, 4)),
                          'bias': jnp.zeros((4,))}
  return {'cell': params}


def _dense_reference(rng):
  return {'d': {'kernel': init.lecun_normal()(_fold(rng, 'd', 'kernel'),
                                              (5, 3)),
                'bias': jnp.zeros((3,))}}


@pytest.mark.parametrize('how', ['init', 'init_by_shape', 'jit_init',
                                 'jit_init_by_shape'])
@pytest.mark.parametrize('module,shape,reference', [
    (Scanned, (2, 5, 3), _lstm_reference),
    (LaxScanned, (4, 2, 5), _dense_reference),
    (Checkpointed, (2, 5), _dense_reference),
    (Conditional, (2, 5), _dense_reference)],
                         ids=['scan_in_dim', 'lax.scan', 'checkpoint', 'cond'])
def test_params_first_made_in_inner_traces_equal_eager_init(
    module, shape, reference, how):
  rng = jax.random.PRNGKey(3)
  x = jnp.ones(shape)

  def make(r):
    if how.endswith('by_shape'):
      return module.init_by_shape(r, [(shape, jnp.float32)])[1]
    return module.init(r, x)[1]

  params = jax.jit(make)(rng) if how.startswith('jit') else make(rng)
  expected = reference(rng)
  if how.startswith('jit'):  # one XLA program: equal to float rounding
    jax.tree_util.tree_map(
        lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7),
        params, expected)
    assert (jax.tree_util.tree_structure(params) ==
            jax.tree_util.tree_structure(expected))
  else:
    _assert_identical(params, expected)
  for leaf in jax.tree_util.tree_leaves(params):
    assert not isinstance(leaf, jax.core.Tracer)


def test_the_2020_rnn_idiom_under_jit_trains_after_init():
  # `jax.jit(create_model)` with an LSTM built by scan_in_dim.
  params = jax.jit(lambda k: Scanned.init_by_shape(
      k, [((2, 5, 3), jnp.float32)])[1])(jax.random.PRNGKey(0))
  x = jnp.linspace(-1, 1, 30).reshape(2, 5, 3)
  loss = lambda p: jnp.sum(Scanned.call(p, x) ** 2)
  grads = jax.grad(loss)(params)
  assert (jax.tree_util.tree_structure(grads) ==
          jax.tree_util.tree_structure(params))
  assert float(loss(jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params,
                                           grads))) < float(loss(params))
