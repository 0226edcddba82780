"""Tests of flaxish.nn.combinators: Sequential and the stax bridge."""
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.example_libraries import stax

from flaxish import nn
from tests.nn._helpers import Affine

X = jnp.linspace(-1, 1, 12).reshape(3, 4)


def test_sequential_applies_modules_and_functions_in_order():
  Seq = nn.Sequential.partial(layers=[Affine.partial(features=5), jnp.tanh,
                                      Affine.partial(features=2)])
  y, params = Seq.init(jax.random.PRNGKey(0), X)
  assert sorted(params) == ['Affine_0', 'Affine_1']
  p = params
  h = np.tanh(X @ p['Affine_0']['kernel'] + p['Affine_0']['bias'])
  np.testing.assert_allclose(y, h @ p['Affine_1']['kernel'] +
                             p['Affine_1']['bias'], rtol=1e-5)
  with pytest.raises(TypeError, match='Module classes or functions'):
    nn.Sequential.init(jax.random.PRNGKey(0), X, layers=[3])


def test_stax_module_matches_stax():
  layer = stax.serial(stax.Dense(5), stax.Relu, stax.Dense(2))
  Wrapped = nn.stax_module(layer, name='Stax')
  y, params = Wrapped.init(jax.random.PRNGKey(0), X)
  name_hash = int.from_bytes(hashlib.sha1(b'params').digest()[:4], 'big')
  _, expected_params = layer[0](
      jax.random.fold_in(jax.random.PRNGKey(0), name_hash), X.shape)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params['params'],
                         expected_params)
  np.testing.assert_allclose(y, layer[1](expected_params, X), rtol=1e-6)

  class Net(nn.Module):
    def apply(self, x):
      return Wrapped(x) + Wrapped(x)

  _, net_params = Net.init(jax.random.PRNGKey(0), X)
  assert sorted(net_params) == ['Stax_0', 'Stax_1']


def test_stax_dropout_gets_an_rng_from_the_stochastic_scope():
  Drop = nn.stax_module(stax.Dropout(0.5, mode='train'))
  with nn.stochastic(jax.random.PRNGKey(0)):
    y, _ = Drop.init(jax.random.PRNGKey(1), jnp.ones((100,)))
  key = jax.random.fold_in(jax.random.PRNGKey(0), 1)
  keep = jax.random.bernoulli(key, 0.5, (100,))
  np.testing.assert_allclose(y, np.where(keep, 2., 0.))
