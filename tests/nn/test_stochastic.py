"""Tests of flaxish.nn.stochastic: stochastic, make_rng, is_stochastic."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn


def test_make_rng_folds_in_a_counter_starting_at_one():
  rng = jax.random.PRNGKey(5)
  with nn.stochastic(rng):
    assert nn.is_stochastic()
    first, second = nn.make_rng(), nn.make_rng()
  assert not nn.is_stochastic()
  np.testing.assert_array_equal(first, jax.random.fold_in(rng, 1))
  np.testing.assert_array_equal(second, jax.random.fold_in(rng, 2))


def test_nested_scopes_use_the_innermost():
  with nn.stochastic(jax.random.PRNGKey(0)):
    with nn.stochastic(jax.random.PRNGKey(1)):
      inner = nn.make_rng()
    outer = nn.make_rng()
  np.testing.assert_array_equal(inner,
                                jax.random.fold_in(jax.random.PRNGKey(1), 1))
  np.testing.assert_array_equal(outer,
                                jax.random.fold_in(jax.random.PRNGKey(0), 1))


def test_typed_keys_are_accepted():
  key = jax.random.key(5)
  with nn.stochastic(key):
    derived = nn.make_rng()
  assert jax.dtypes.issubdtype(derived.dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(derived),
                                jax.random.fold_in(jax.random.PRNGKey(5), 1))


def test_make_rng_outside_a_scope_is_an_error():
  with pytest.raises(ValueError, match=r'needs an rng: run the code inside '
                     r'`with nn.stochastic\(rng\):`'):
    nn.make_rng()
  with pytest.raises(TypeError, match='expects a PRNG key'):
    with nn.stochastic(3):
      pass


def test_scope_opened_inside_jit_gives_new_numbers_per_call():

  @jax.jit
  def sample(rng):
    with nn.stochastic(rng):
      return jax.random.uniform(nn.make_rng())

  a = sample(jax.random.PRNGKey(0))
  b = sample(jax.random.PRNGKey(1))
  assert a != b
  np.testing.assert_allclose(
      a, jax.random.uniform(jax.random.fold_in(jax.random.PRNGKey(0), 1)))


@pytest.mark.parametrize('transform', [
    jax.jit,
    jax.vmap,
    jax.grad,
    lambda f: (lambda x: jax.lax.scan(lambda c, y: (c, f(y)), 0., x)[1]),
], ids=['jit', 'vmap', 'grad', 'scan'])
def test_scope_opened_outside_a_transform_cannot_be_used_inside(transform):
  # flax issue #112: this used to return the same numbers on every call.
  def noisy(x):
    return x * jax.random.uniform(nn.make_rng())

  with nn.stochastic(jax.random.PRNGKey(0)):
    with pytest.raises(ValueError, match='its `nn.stochastic\\(rng\\)` scope '
                       'was opened outside it'):
      transform(noisy)(jnp.ones(()) if transform is jax.grad else jnp.ones(3))


def test_make_rng_errors_name_the_module_that_asked():
  class Net(nn.Module):
    def apply(self, x):
      x = nn.Dense(x, 4)
      return nn.dropout(x, 0.5)

  x = jnp.ones((2, 3))
  with pytest.raises(ValueError, match=r'nn.make_rng\(\) \(asked by module '
                     r'"/net"\) needs an rng: .*nn.stochastic\(rng\)'):
    Net.init(jax.random.PRNGKey(0), x, name='net')

  class Attend(nn.Module):
    def apply(self, x):
      return nn.SelfAttention(x, num_heads=2, dropout_rate=0.5, name='att')

  with pytest.raises(ValueError, match='asked by module "/att"'):
    Attend.init(jax.random.PRNGKey(0), jnp.ones((1, 2, 4)))


def test_dropout_is_importable_from_its_2020_path():
  # As in 2020, nn.stochastic is the function; the module holds dropout.
  # pylint: disable-next=g-import-not-at-top
  from flaxish.nn.stochastic import dropout, stochastic
  assert dropout is nn.dropout and stochastic is nn.stochastic
