"""Data parallelism on 8 fake CPU devices: replicate(), pmap training equal to
single-device training, unreplicate, one-copy state dicts."""
import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import jax_utils
from flaxish import optim
from flaxish import serialization
from flaxish.training import common_utils

N_STEPS = 5


def make_problem():
  rng = np.random.RandomState(0)
  params = {'w': rng.randn(4, 2).astype(np.float32),
            'b': np.zeros(2, np.float32)}
  x = rng.randn(32, 4).astype(np.float32)
  y = rng.randn(32, 2).astype(np.float32)
  return params, x, y


def loss_fn(params, x, y):
  return jnp.mean((x @ params['w'] + params['b'] - y)**2)


def train_single(opt_def, params, x, y):
  opt = opt_def.create(params)
  step = jax.jit(lambda o: o.apply_gradient(jax.grad(loss_fn)(o.target, x,
                                                                y)))
  for _ in range(N_STEPS):
    opt = step(opt)
  return opt


@pytest.mark.parametrize('opt_def', [optim.Momentum(0.1, beta=0.9),
                                     optim.Adam(0.05)],
                         ids=['momentum', 'adam'])
def test_replicated_training_equals_full_batch(opt_def):
  params, x, y = make_problem()
  single = train_single(opt_def, params, x, y)

  opt = opt_def.create(params).replicate()
  assert opt.is_replicated()
  assert opt.target['w'].shape == (8, 4, 2)
  assert opt.state.step.shape == (8,)

  @functools.partial(jax.pmap, axis_name='batch')
  def train_step(opt, x, y):
    # No explicit pmean: the replicated optimizer averages the gradients.
    return opt.apply_gradient(jax.grad(loss_fn)(opt.target, x, y))

  xs, ys = common_utils.shard(x), common_utils.shard(y)
  for _ in range(N_STEPS):
    opt = train_step(opt, xs, ys)
    opt.state.step.block_until_ready()  # never queue many collectives

  unrep = opt.unreplicate()
  assert not unrep.is_replicated()
  assert unrep.optimizer_def is opt_def
  assert unrep.state.step.shape == ()
  for a, b in zip(jax.tree_util.tree_leaves(unrep),
                  jax.tree_util.tree_leaves(single)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_jax_utils_replicate_with_explicit_pmean():
  params, x, y = make_problem()
  opt_def = optim.Momentum(0.1, nesterov=True)
  single = train_single(opt_def, params, x, y)
  opt = jax_utils.replicate(opt_def.create(params))
  assert opt.is_replicated()

  @functools.partial(jax.pmap, axis_name='batch')
  def train_step(opt, x, y):
    grads = lax.pmean(jax.grad(loss_fn)(opt.target, x, y), 'batch')
    return opt.apply_gradient(grads)

  xs, ys = common_utils.shard(x), common_utils.shard(y)
  for _ in range(N_STEPS):
    opt = train_step(opt, xs, ys)
    opt.state.step.block_until_ready()
  unrep = jax_utils.unreplicate(opt)
  assert unrep.optimizer_def is opt_def
  np.testing.assert_allclose(unrep.target['w'], single.target['w'],
                             rtol=1e-5, atol=1e-5)


def test_replicated_state_dict_is_one_copy_and_restores():
  params, x, y = make_problem()
  opt = optim.Adam(0.1).create(params)
  opt = opt.apply_gradient(jax.grad(loss_fn)(opt.target, x, y))
  rep = opt.replicate()
  sd = rep.state_dict()
  assert sd['target']['w'].shape == (4, 2)
  assert np.shape(sd['state']['step']) == ()
  assert serialization.to_state_dict(rep)['target']['w'].shape == (4, 2)
  np.testing.assert_array_equal(sd['target']['w'], opt.target['w'])

  # bytes written from the replicated optimizer hold one copy ...
  data = serialization.to_bytes(rep)
  assert len(data) < 2 * len(serialization.to_bytes(opt))
  # ... and restore into an unreplicated and into a replicated optimizer.
  fresh = optim.Adam(0.1).create(jax.tree_util.tree_map(np.zeros_like,
                                                        params))
  restored = serialization.from_bytes(fresh, data)
  assert int(restored.state.step) == 1
  np.testing.assert_array_equal(restored.target['w'], opt.target['w'])
  restored_rep = serialization.from_bytes(fresh.replicate(), data)
  assert restored_rep.target['w'].shape == (8, 4, 2)
  np.testing.assert_array_equal(restored_rep.target['w'][5], opt.target['w'])
  assert restored_rep.state.step.shape == (8,)
  restored_rep = fresh.replicate().restore_state(sd)
  np.testing.assert_array_equal(restored_rep.state.param_states['b']
                                .grad_ema[3],
                                opt.state.param_states['b'].grad_ema)


def test_unreplicate_not_replicated():
  params, _, _ = make_problem()
  opt = optim.Adam(0.1).create(params)
  with pytest.raises(ValueError, match=r'unreplicate: this optimizer is not '
                     r'replicated \(it did not come from '
                     r'optimizer.replicate\(\) or jax_utils.replicate\(\)\)'):
    opt.unreplicate()
  rep = opt.replicate()
  with pytest.raises(ValueError, match='already replicated'):
    rep.replicate()
  with pytest.raises(ValueError, match='already replicated'):
    jax_utils.replicate(rep)


def test_replicate_on_no_devices_is_a_clear_error():
  params, _, _ = make_problem()
  opt = optim.Adam(0.1).create(params)
  message = (r'replicate: got an empty list of devices \(\[\]\); pass '
             r'devices=None to use every local device '
             r'\(jax.local_devices\(\)\), or a non-empty list')
  with pytest.raises(ValueError, match=message):
    opt.replicate(devices=[])
  with pytest.raises(ValueError, match=message):
    jax_utils.replicate(opt, devices=[])


def test_replicated_restore_state_takes_the_2020_keyword_target():
  params, x, y = make_problem()
  opt = optim.Adam(0.1).create(params)
  opt = opt.apply_gradient(jax.grad(loss_fn)(opt.target, x, y))
  rep = opt.replicate(devices=jax.local_devices()[:2])
  sd = rep.state_dict()
  rep_def = rep.optimizer_def
  assert isinstance(rep_def, optim.ReplicatedOptimizer)
  by_keyword = rep_def.restore_state(target=rep.target, opt_state=rep.state,
                                     state_dict=sd)
  by_position = rep_def.restore_state(rep.target, rep.state, sd)
  for restored in (by_keyword, by_position):
    target, state = restored
    assert target['w'].shape == (2, 4, 2)
    for row in range(2):
      np.testing.assert_array_equal(target['w'][row], opt.target['w'])
      np.testing.assert_array_equal(state.param_states['w'].grad_sq_ema[row],
                                    opt.state.param_states['w'].grad_sq_ema)
    np.testing.assert_array_equal(state.step, [1, 1])


def test_apply_gradient_outside_pmap():
  params, x, y = make_problem()
  rep = optim.Adam(0.1).create(params).replicate(axis_name='data')
  grads = jax_utils.replicate(jax.grad(loss_fn)(params, x, y))
  with pytest.raises(ValueError, match=r"replicated with axis_name='data': "
                     r'call apply_gradient inside jax.pmap\(train_step, '
                     r"axis_name='data'\)"):
    rep.apply_gradient(grads)
