"""GradientAccumulation: k micro-steps equal one step on the mean gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import optim


def test_k_micro_steps_equal_one_big_step(params, grads_seq, trees_close):
  k = 4
  acc = optim.GradientAccumulation(optim.Adam(0.1), steps=k).create(params)
  step = jax.jit(lambda o, g: o.apply_gradient(g))
  for i, g in enumerate(grads_seq):
    acc = step(acc, g)
    if i < k - 1:  # target unchanged until the k-th micro-step
      for name in params:
        np.testing.assert_array_equal(acc.target[name], params[name])
  mean = {n: np.mean([g[n] for g in grads_seq], axis=0) for n in params}
  big = optim.Adam(0.1).create(params).apply_gradient(mean)
  trees_close(acc.target, {n: np.asarray(big.target[n]) for n in params})
  assert int(acc.state.step) == k
  assert int(acc.state.param_states.inner.step) == 1
  for name in params:  # the sum starts over
    np.testing.assert_array_equal(acc.state.param_states.grad_sum[name], 0.)


def test_two_rounds_by_hand(params, grads_seq, trees_close):
  opt = optim.GradientAccumulation(optim.GradientDescent(0.5), 2).create(
      params)
  for g in grads_seq:
    opt = opt.apply_gradient(g)
  expected = {n: params[n] - 0.5 * (grads_seq[0][n] + grads_seq[1][n]) / 2
              - 0.5 * (grads_seq[2][n] + grads_seq[3][n]) / 2 for n in params}
  trees_close(opt.target, expected)


def test_bfloat16_params_accumulate_in_float32():
  params = {'w': jnp.ones(3, jnp.bfloat16)}
  opt = optim.GradientAccumulation(optim.Momentum(0.1), 2).create(params)
  assert opt.state.param_states.grad_sum['w'].dtype == jnp.float32
  opt = opt.apply_gradient({'w': jnp.full(3, 0.5, jnp.bfloat16)})
  opt = opt.apply_gradient({'w': jnp.full(3, 0.5, jnp.bfloat16)})
  assert opt.target['w'].dtype == jnp.bfloat16
  np.testing.assert_allclose(opt.target['w'].astype(np.float32), 0.95,
                             rtol=1e-2)


def test_state_dict_and_bad_steps(params, grads_seq):
  opt = optim.GradientAccumulation(optim.Adam(0.1), 3).create(params)
  opt = opt.apply_gradient(grads_seq[0])
  sd = opt.state_dict()
  assert set(sd['state']['param_states']) == {'inner', 'grad_sum'}
  restored = optim.GradientAccumulation(optim.Adam(0.1), 3).create(
      params).restore_state(sd)
  np.testing.assert_array_equal(restored.state.param_states.grad_sum['w'],
                                grads_seq[0]['w'])
  with pytest.raises(ValueError, match='steps must be an int >= 1'):
    optim.GradientAccumulation(optim.Adam(0.1), 0)
