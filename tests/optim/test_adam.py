"""Adam against the NumPy rule and optax.adam / optax.adamw."""
import numpy as np
import optax
import pytest

from flaxish import optim
from flaxish.optim._moments import MomentState
from flaxish.optim.adam import _AdamHyperParams


def numpy_adam(params, grads_seq, lr, b1, b2, eps, wd):
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, g in enumerate(grads_seq, start=1):
    for k in p:
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      v[k] = b2 * v[k] + (1 - b2) * g[k]**2
      m_hat = m[k] / (1 - b1**t)
      v_hat = v[k] / (1 - b2**t)
      p[k] = p[k] - lr * m_hat / (np.sqrt(v_hat) + eps) - lr * wd * p[k]
  return p, m, v


def test_init_state(params):
  opt_def = optim.Adam(learning_rate=0.1, beta1=0.2, beta2=0.9, eps=0.01,
                       weight_decay=0.0)
  assert opt_def.hyper_params == _AdamHyperParams(0.1, 0.2, 0.9, 0.01, 0.0)
  state = opt_def.init_state(params)
  assert isinstance(state.param_states['b'], MomentState)
  np.testing.assert_array_equal(state.param_states['b'].grad_sq_ema,
                                np.zeros(4))


@pytest.mark.parametrize('wd', [0., 0.1])
def test_steps_match_numpy(params, grads_seq, run_steps, trees_close, wd):
  opt = run_steps(optim.Adam(0.1, beta1=0.8, beta2=0.95, eps=1e-3,
                             weight_decay=wd), params, grads_seq)
  p, m, v = numpy_adam(params, grads_seq, 0.1, 0.8, 0.95, 1e-3, wd)
  trees_close(opt.target, p)
  states = opt.state.param_states
  trees_close({k: s.grad_ema for k, s in states.items()}, m)
  trees_close({k: s.grad_sq_ema for k, s in states.items()}, v)


def test_matches_optax_adam_and_adamw(params, grads_seq, run_steps,
                                      run_optax, trees_close):
  opt = run_steps(optim.Adam(0.01), params, grads_seq)
  trees_close(opt.target, run_optax(optax.adam(0.01), params, grads_seq),
              rtol=1e-6, atol=1e-6)
  opt = run_steps(optim.Adam(0.01, weight_decay=0.1), params, grads_seq)
  tx = optax.adamw(0.01, weight_decay=0.1)
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)


def test_learning_rate_schedule_override(params, grads_seq, trees_close):
  opt = optim.Adam(beta1=0.5).create(params)
  lrs = [0.1, 0.05, 0.02, 0.01]
  for lr, g in zip(lrs, grads_seq):
    opt = opt.apply_gradient(g, learning_rate=lr)
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, (lr, g) in enumerate(zip(lrs, grads_seq), start=1):
    for k in p:
      m[k] = 0.5 * m[k] + 0.5 * g[k]
      v[k] = 0.999 * v[k] + 0.001 * g[k]**2
      p[k] -= lr * (m[k] / (1 - 0.5**t)) / (
          np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
  trees_close(opt.target, p)
