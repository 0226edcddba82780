"""Tests of nn.Model (flaxish/nn/modules.py): a pytree, truncate_at,
serialization."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn, serialization
from tests.nn._helpers import MLP

X = jnp.linspace(-1, 1, 15).reshape(3, 5)


def _model():
  _, params = MLP.init(jax.random.PRNGKey(0), X)
  return nn.Model(MLP, params)


def test_model_is_a_pytree_with_a_static_module():
  model = _model()
  leaves, treedef = jax.tree_util.tree_flatten(model)
  assert len(leaves) == 4
  rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
  assert rebuilt.module is MLP
  doubled = jax.tree_util.tree_map(lambda p: 2 * p, model)
  np.testing.assert_array_equal(doubled.params['Affine_0']['kernel'],
                                2 * model.params['Affine_0']['kernel'])


def test_call_equals_module_call():
  model = _model()
  np.testing.assert_array_equal(model(X), MLP.call(model.params, X))


def test_replace_and_hash():
  model = _model()
  zeros = jax.tree_util.tree_map(jnp.zeros_like, model.params)
  zero_model = model.replace(params=zeros)
  np.testing.assert_array_equal(zero_model(X), jnp.zeros((3, 2)))
  assert hash(model) != hash(zero_model)
  assert {model: 1}[model] == 1


def test_truncate_at_returns_intermediate_outputs():
  model = _model()
  p = model.params
  hidden = np.tanh(X @ p['Affine_0']['kernel'] + p['Affine_0']['bias'])
  # As in 2020: each path gives the list of its module's outputs.
  (first,) = model.truncate_at('/Affine_0')(X)
  np.testing.assert_allclose(first, X @ p['Affine_0']['kernel'] +
                             p['Affine_0']['bias'], rtol=1e-6)
  both = model.truncate_at({'a': '/Affine_0', 'top': '/'})(X)
  assert isinstance(both['a'], list) and len(both['top']) == 1
  np.testing.assert_allclose(both['a'][0], first, rtol=1e-6)
  np.testing.assert_allclose(both['top'][0], model(X), rtol=1e-6)
  np.testing.assert_allclose(np.tanh(both['a'][0]), hidden, rtol=1e-6)
  (jitted,) = jax.jit(lambda m, x: m(x))(model.truncate_at('/Affine_1'), X)
  np.testing.assert_allclose(jitted, model(X), rtol=1e-6)
  # The truncated model's params are the model's own (a transparent wrapper).
  assert model.truncate_at('/').params is model.params


def test_truncated_model_matches_the_2020_test():

  class Dummy(nn.Module):
    def apply(self, x):
      return x + 1.

  class Nested(nn.Module):
    def apply(self, x):
      return Dummy(x, name='dummy_0') + 1.

  x = jnp.array([1.])
  _, params = Nested.init(jax.random.PRNGKey(0), x)
  assert nn.Model(Nested, params).truncate_at('/dummy_0')(x) == [x + 1]


def test_transparent_module_needs_one_child_named_0():

  class Bad(nn.base.TransparentModule):
    def apply(self, x):
      return nn.Dense(x, 2, name='dense')

  with pytest.raises(ValueError, match="exactly one child, named '0'; it "
                     r"made \['dense'\]"):
    Bad.init(jax.random.PRNGKey(0), X)


def test_truncate_at_unknown_path_lists_the_known_ones():
  with pytest.raises(ValueError, match=r"no module at \['/Nope'\]; the "
                     r"module paths are \['/', '/Affine_0', '/Affine_1'\]"):
    _model().truncate_at('/Nope')(X)
  with pytest.raises(ValueError, match='paths like "/Dense_0"'):
    _model().truncate_at('Affine_0')(X)
  with pytest.raises(ValueError, match='wrapped_module= and truncate_path='):
    nn.base.TruncatedModule.call({'0': {}}, X)


def test_model_serializes_as_params():
  model = _model()
  state = serialization.to_state_dict(model)
  assert list(state) == ['params']
  zeros = jax.tree_util.tree_map(jnp.zeros_like, model)
  restored = serialization.from_state_dict(zeros, state)
  assert restored.module is MLP
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored.params,
                         model.params)
