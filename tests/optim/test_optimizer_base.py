"""The OptimizerDef / Optimizer API: state, overrides, errors, gradients,
state dicts."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import optim
from flaxish import serialization
from flaxish.optim._moments import MomentState
from flaxish.optim.momentum import _MomentumHyperParams, _MomentumParamState
from flaxish.traverse_util import t_identity


def test_create_and_init_state(params):
  opt = optim.Momentum(0.1, beta=0.5).create(params)
  assert isinstance(opt, optim.Optimizer)
  assert isinstance(opt.state, optim.OptimizerState)
  assert opt.state.step.dtype == jnp.int32 and int(opt.state.step) == 0
  assert opt.target is params
  assert isinstance(opt.state.param_states['w'], _MomentumParamState)


def test_optimizer_is_a_pytree_through_jit(params, grads_seq):
  opt = optim.Adam(0.1).create(params)
  leaves = jax.tree_util.tree_leaves(opt)
  assert len(leaves) == 1 + 2 * 2 + 2  # step, 2 moments x 2 leaves, params
  step = jax.jit(lambda o, g: o.apply_gradient(g))
  jitted = step(opt, grads_seq[0])
  eager = opt.apply_gradient(grads_seq[0])
  for a, b in zip(jax.tree_util.tree_leaves(jitted),
                  jax.tree_util.tree_leaves(eager)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert jitted.optimizer_def is opt.optimizer_def


def test_jitted_update_runs_no_python_per_leaf(params, grads_seq):
  calls = []

  class CountingAdam(optim.Adam):

    def apply_param_gradient(self, *args):
      calls.append(1)
      return super().apply_param_gradient(*args)

  opt = CountingAdam(0.1).create(params)
  step = jax.jit(lambda o, g: o.apply_gradient(g))
  for g in grads_seq:
    opt = step(opt, g)
  assert len(calls) == 2  # traced once, one call per leaf
  assert int(opt.state.step) == len(grads_seq)


def test_update_hyper_params():
  opt_def = optim.Momentum(0.1, beta=0.5)
  assert opt_def.update_hyper_params() == opt_def.hyper_params
  assert opt_def.update_hyper_params(learning_rate=0.2) == (
      _MomentumHyperParams(0.2, 0.5, 0, False))
  replaced = _MomentumHyperParams(1., 0., 0., True)
  assert opt_def.update_hyper_params(hyper_params=replaced) == replaced
  with pytest.raises(TypeError, match=r"Momentum has no hyper-parameter\(s\) "
                     r"\['beta1'\]; the hyper-parameters are "
                     r"\['learning_rate', 'beta', 'weight_decay', "
                     r"'nesterov'\]"):
    opt_def.update_hyper_params(beta1=0.9)


def test_traced_learning_rate_override(params, grads_seq):
  opt = optim.GradientDescent().create(params)

  @jax.jit
  def step(opt, g, lr):
    return opt.apply_gradient(g, learning_rate=lr)

  new = step(opt, grads_seq[0], 0.25)
  np.testing.assert_allclose(new.target['b'],
                             params['b'] - 0.25 * grads_seq[0]['b'],
                             rtol=1e-6)


def test_missing_learning_rate_for_every_optimizer(params, grads_seq):
  for opt_def in [optim.GradientDescent(), optim.Momentum(), optim.Adam(),
                  optim.Adagrad(), optim.RMSProp(), optim.LAMB(),
                  optim.LARS(), optim.Adafactor(),
                  optim.WeightNorm(optim.Adam())]:
    opt = opt_def.create(params)
    with pytest.raises(ValueError, match='no learning_rate given'):
      opt.apply_gradient(grads_seq[0])


def test_gradient_structure_mismatch_names_the_path(params):
  opt = optim.Adam(0.1).create({'layer': params, 'other': np.zeros(2)})
  grads = {'layer': {'w': np.zeros((3, 4))}, 'other': np.zeros(2)}
  with pytest.raises(
      ValueError,
      match=r"the gradient tree does not match the parameters: at /layer the "
      r"parameters have a dict with keys \['b', 'w'\] but the gradients have "
      r"a dict with keys \['w'\]"):
    opt.apply_gradient(grads)
  with pytest.raises(ValueError, match=r"at /other the parameters have a "
                     r"leaf of type ndarray but the gradients have a tuple"):
    opt.apply_gradient({'layer': params, 'other': (np.zeros(2),)})


def test_gradient_shape_mismatch(params):
  opt = optim.Momentum(0.1).create(params)
  grads = dict(params, w=np.zeros((4, 3), np.float32))
  with pytest.raises(ValueError, match=r'the gradient at /w has shape '
                     r'\(4, 3\) but the parameter has shape \(3, 4\)'):
    opt.apply_gradient(grads)


def test_compute_gradient_and_optimize(params):
  opt = optim.GradientDescent(0.1).create(params)
  loss_fn = lambda p: jnp.sum(p['w']**2) + jnp.sum(p['b'])
  loss, grad = opt.compute_gradient(loss_fn)
  np.testing.assert_allclose(loss, np.sum(params['w']**2) + params['b'].sum(),
                             rtol=1e-6)
  np.testing.assert_allclose(grad['w'], 2 * params['w'], rtol=1e-6)
  loss2, aux, grad2 = opt.compute_gradients(lambda p: (loss_fn(p), {'n': 3}))
  assert aux == {'n': 3}
  np.testing.assert_allclose(grad2['b'], np.ones(4))

  new_opt, loss3 = opt.optimize(loss_fn, learning_rate=0.5)
  np.testing.assert_allclose(loss3, loss)
  np.testing.assert_allclose(new_opt.target['w'], params['w'] * 0.,
                             atol=1e-6)  # w - 0.5 * 2w
  new_opt, loss4, aux4 = opt.optimize(lambda p: (loss_fn(p), 7))
  assert aux4 == 7 and int(new_opt.state.step) == 1


def test_state_dict_round_trip(params, grads_seq):
  opt = optim.Adam(0.1).create(params)
  for g in grads_seq[:2]:
    opt = opt.apply_gradient(g)
  sd = opt.state_dict()
  assert set(sd) == {'target', 'state'}
  assert set(sd['state']) == {'step', 'param_states'}
  assert set(sd['state']['param_states']['w']) == {'grad_ema', 'grad_sq_ema'}
  assert serialization.to_state_dict(opt).keys() == sd.keys()

  fresh = optim.Adam(0.1).create(jax.tree_util.tree_map(np.zeros_like,
                                                        params))
  restored = fresh.restore_state(sd)
  assert int(restored.state.step) == 2
  for a, b in zip(jax.tree_util.tree_leaves(restored),
                  jax.tree_util.tree_leaves(opt)):
    np.testing.assert_array_equal(a, b)
  again = serialization.from_state_dict(fresh, sd)
  np.testing.assert_array_equal(again.target['w'], opt.target['w'])


def test_restore_state_missing_key(params):
  opt = optim.Adam(0.1).create(params)
  with pytest.raises(ValueError, match=r'missing "state" in the optimizer '
                     r"state dict \(found keys \['target'\]\)"):
    opt.restore_state({'target': opt.state_dict()['target']})


def test_create_with_focus_optimizes_only_the_focus(params, grads_seq):
  opt = optim.GradientDescent(0.1).create(params, focus=t_identity['w'])
  assert isinstance(opt.optimizer_def, optim.MultiOptimizer)
  new = opt.apply_gradient(grads_seq[0])
  np.testing.assert_allclose(new.target['w'],
                             params['w'] - 0.1 * grads_seq[0]['w'], rtol=1e-6)
  np.testing.assert_array_equal(new.target['b'], params['b'])


def test_param_states_are_namedtuples_with_the_2020_state_dict_layout():
  state = MomentState(np.zeros(2), np.ones(2))
  # Flattened natively by JAX (no Python callback per parameter).
  assert isinstance(state, tuple) and state._fields == ('grad_ema',
                                                        'grad_sq_ema')
  assert len(jax.tree_util.tree_leaves(state)) == 2
  new = state.replace(grad_ema=np.full(2, 3.))
  np.testing.assert_array_equal(new.grad_ema, [3., 3.])
  assert set(serialization.to_state_dict(state)) == {'grad_ema',
                                                     'grad_sq_ema'}
  restored = serialization.from_state_dict(
      state, {'grad_ema': np.full(2, 5.), 'grad_sq_ema': np.zeros(2)})
  assert isinstance(restored, MomentState)
  np.testing.assert_array_equal(restored.grad_ema, [5., 5.])
  with pytest.raises(TypeError, match='param_state decorates a '
                     'typing.NamedTuple'):
    optim.base.param_state(dict)


def test_a_def_without_an_update_rule_says_what_to_implement():
  opt_def = optim.OptimizerDef(None)
  with pytest.raises(NotImplementedError, match='OptimizerDef must '
                     'implement init_param_state'):
    opt_def.init_state({'w': np.zeros(2)})
  with pytest.raises(NotImplementedError, match='OptimizerDef must '
                     'implement apply_param_gradient'):
    opt_def.apply_param_gradient(0, None, np.zeros(2), (), np.zeros(2))


def test_a_wrapper_wraps_only_an_optimizer_def():
  with pytest.raises(TypeError, match=r'OptimizerWrapper wraps an '
                     r'OptimizerDef \(such as optim.Adam\(1e-3\)\), got '
                     r'\[1\]'):
    optim.OptimizerWrapper([1], None)


def test_float64_numpy_params_become_float32_without_warnings():
  # 2020 code often passed np.ones(...) (float64) params.
  params = {'w': np.ones((2, 2)) * 2., 'b': np.ones(2)}
  grads = {'w': np.ones((2, 2)), 'b': np.ones(2)}
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    for opt_def in [optim.GradientDescent(0.1), optim.Adam(0.1),
                    optim.WeightNorm(optim.Momentum(0.1)),
                    optim.ClipByGlobalNorm(optim.LAMB(0.1), 1.)]:
      opt = opt_def.create(params).apply_gradient(grads)
      assert opt.target['w'].dtype == jnp.float32
