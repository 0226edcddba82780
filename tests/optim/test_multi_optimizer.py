"""MultiOptimizer and ModelParamTraversal on a real nn.Model."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxish import nn
from flaxish import optim
from flaxish.traverse_util import t_identity


class MLP(nn.Module):

  def apply(self, x):
    x = nn.Dense(x, 3)
    return nn.Dense(x, 2, name='out')


@pytest.fixture
def model():
  _, params = MLP.init(jax.random.PRNGKey(0), jnp.ones((1, 4)))
  return nn.Model(MLP, params)


def model_grads(model, seed):
  rng = np.random.RandomState(seed)
  return jax.tree_util.tree_map(
      lambda p: jnp.asarray(rng.randn(*p.shape), jnp.float32), model)


def test_traversal_paths_iterate_update_set(model):
  seen = []

  def is_kernel(path, value):
    seen.append((path, value.shape))
    return path.endswith('kernel')

  t = optim.ModelParamTraversal(is_kernel)
  values = list(t.iterate(model))
  assert seen == [('/Dense_0/bias', (3,)), ('/Dense_0/kernel', (4, 3)),
                  ('/out/bias', (2,)), ('/out/kernel', (3, 2))]
  assert [v.shape for v in values] == [(4, 3), (3, 2)]
  doubled = t.update(lambda v: v * 2, model)
  assert isinstance(doubled, nn.Model) and doubled.module is MLP
  np.testing.assert_allclose(doubled.params['out']['kernel'],
                             model.params['out']['kernel'] * 2)
  assert doubled.params['out']['bias'] is model.params['out']['bias']
  zeroed = t.set([jnp.zeros((4, 3)), jnp.zeros((3, 2))], model)
  assert float(jnp.abs(zeroed.params['Dense_0']['kernel']).sum()) == 0.


def test_traversal_keeps_empty_sub_dicts():
  m = nn.Model(MLP, {'a': {'kernel': jnp.ones(2)}, 'empty': {}})
  t = optim.ModelParamTraversal(lambda path, _: True)
  new = t.update(lambda v: v + 1, m)
  assert new.params['empty'] == {}
  assert (jax.tree_util.tree_structure(new) ==
          jax.tree_util.tree_structure(m))


def test_traversal_rejects_non_model(model):
  t = optim.ModelParamTraversal(lambda *_: True)
  with pytest.raises(ValueError, match=r'ModelParamTraversal can only '
                     r'traverse an nn.Model, not a dict; wrap the params '
                     r'with nn.Model\(module, params\)'):
    list(t.iterate(model.params))


def test_two_groups_match_optax_multi_transform_and_frozen_group(model):
  kernels = optim.ModelParamTraversal(lambda p, _: p.endswith('kernel'))
  hidden_bias = optim.ModelParamTraversal(lambda p, _: p == '/Dense_0/bias')
  opt_def = optim.MultiOptimizer(
      (kernels, optim.Momentum(0.1, beta=0.9)),
      (hidden_bias, optim.Adam(0.05)))
  opt = opt_def.create(model)
  assert isinstance(opt.state, list) and len(opt.state) == 2
  labels = {'Dense_0': {'kernel': 'k', 'bias': 'b'},
            'out': {'kernel': 'k', 'bias': 'frozen'}}
  tx = optax.multi_transform({'k': optax.sgd(0.1, momentum=0.9),
                              'b': optax.adam(0.05),
                              'frozen': optax.set_to_zero()}, labels)
  ref = model.params
  ref_state = tx.init(ref)
  step = jax.jit(lambda o, g: o.apply_gradient(g))
  for i in range(3):
    g = model_grads(model, i)
    opt = step(opt, g)
    updates, ref_state = tx.update(g.params, ref_state, ref)
    ref = optax.apply_updates(ref, updates)
  for path in [('Dense_0', 'kernel'), ('Dense_0', 'bias'), ('out', 'kernel')]:
    np.testing.assert_allclose(opt.target.params[path[0]][path[1]],
                               ref[path[0]][path[1]], rtol=1e-6, atol=1e-6)
  # The bias of 'out' is in no group: bit-for-bit unchanged.
  np.testing.assert_array_equal(opt.target.params['out']['bias'],
                                model.params['out']['bias'])
  assert [int(s.step) for s in opt.state] == [3, 3]


def test_hyper_param_overrides_go_to_the_groups_that_have_them(model):
  kernels = optim.ModelParamTraversal(lambda p, _: p.endswith('kernel'))
  biases = optim.ModelParamTraversal(lambda p, _: p.endswith('bias'))
  opt_def = optim.MultiOptimizer((kernels, optim.GradientDescent(0.1)),
                                 (biases, optim.Adam(0.1)))
  hps = opt_def.update_hyper_params(learning_rate=0.5, beta1=0.)
  assert hps[0].learning_rate == 0.5 and hps[1].learning_rate == 0.5
  assert hps[1].beta1 == 0.
  with pytest.raises(TypeError, match=r'no sub-optimizer of this '
                     r"MultiOptimizer has the hyper-parameter\(s\) \['beta'\]"):
    opt_def.update_hyper_params(beta=0.5)
  opt = opt_def.create(model)
  g = model_grads(model, 0)
  new = opt.apply_gradient(g, learning_rate=0.5)
  np.testing.assert_allclose(
      new.target.params['out']['kernel'],
      model.params['out']['kernel'] - 0.5 * g.params['out']['kernel'],
      rtol=1e-6)


def test_state_dict_round_trip(model):
  kernels = optim.ModelParamTraversal(lambda p, _: p.endswith('kernel'))
  opt = optim.MultiOptimizer((kernels, optim.Adam(0.1))).create(model)
  opt = opt.apply_gradient(model_grads(model, 0))
  sd = opt.state_dict()
  assert set(sd['state']) == {'0'}
  assert set(sd['state']['0']) == {'step', 'param_states'}
  assert set(sd['target']) == {'params'}
  restored = optim.MultiOptimizer((kernels, optim.Adam(0.1))).create(
      model).restore_state(sd)
  for a, b in zip(jax.tree_util.tree_leaves(restored),
                  jax.tree_util.tree_leaves(opt)):
    np.testing.assert_array_equal(a, b)


def test_traversal_that_selects_nothing(model):
  typo = optim.ModelParamTraversal(lambda p, _: p.endswith('kernal'))
  with pytest.raises(ValueError, match=r"MultiOptimizer: traversal #0 selects "
                     r"no parameters; its filter returned False for every "
                     r"parameter path \('/Dense_0/bias', '/Dense_0/kernel', "
                     r"'/out/bias', '/out/kernel'\)\. Fix the filter"):
    optim.MultiOptimizer((typo, optim.Adam(0.1))).create(model)
  with pytest.raises(ValueError, match='traversal #0 selects no parameters'):
    optim.GradientDescent(0.1).create(
        {'a': jnp.ones(2), 'b': {}},
        focus=t_identity.merge(t_identity['a'], t_identity['b']).tree().filter(
            lambda x: False))
  with pytest.raises(ValueError, match='traversal #1 selects no parameters'):
    optim.MultiOptimizer((t_identity['a'], optim.Adam(0.1)),
                         (t_identity['b'], optim.Adam(0.1))).create(
                             {'a': jnp.ones(2), 'b': {}})


def test_overlapping_traversals_and_bad_arguments(model):
  all_params = optim.ModelParamTraversal(lambda *_: True)
  kernels = optim.ModelParamTraversal(lambda p, _: p.endswith('kernel'))
  with pytest.raises(ValueError, match=r'the parameter at '
                     r'/params/Dense_0/kernel is selected by traversals '
                     r'\[0, 1\]; each parameter may be updated by one '
                     r'optimizer only'):
    optim.MultiOptimizer((all_params, optim.Adam(0.1)),
                         (kernels, optim.Momentum(0.1))).create(model)
  with pytest.raises(TypeError, match=r'argument #0 must be a \(traversal, '
                     r'optimizer_def\) pair'):
    optim.MultiOptimizer((optim.Adam(0.1), kernels))
  with pytest.raises(ValueError, match=r'MultiOptimizer needs at least one '
                     r'\(traversal, optimizer_def\) pair'):
    optim.MultiOptimizer()
