"""LAMB against the NumPy rule and optax.lamb."""
import numpy as np
import optax
import pytest

from flaxish import optim
from flaxish.optim._moments import MomentState
from flaxish.optim.lamb import _LAMBHyperParams


def numpy_lamb(params, grads_seq, lr, b1, b2, wd, eps):
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, g in enumerate(grads_seq, start=1):
    for k in p:
      m[k] = b1 * m[k] + (1 - b1) * g[k]
      v[k] = b2 * v[k] + (1 - b2) * g[k]**2
      u = (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
      u = u + wd * p[k]
      pn, un = np.linalg.norm(p[k]), np.linalg.norm(u)
      ratio = pn / un if un > 0 else 1.
      p[k] = p[k] - ratio * lr * u
  return p


def test_init_state(params):
  opt_def = optim.LAMB(learning_rate=0.1)
  assert opt_def.hyper_params == _LAMBHyperParams(0.1, 0.9, 0.999, 0, 1e-6)
  assert isinstance(opt_def.init_state(params).param_states['w'],
                    MomentState)


@pytest.mark.parametrize('wd', [0., 0.1])
def test_steps_match_numpy(params, grads_seq, run_steps, trees_close, wd):
  opt = run_steps(optim.LAMB(0.1, beta1=0.8, beta2=0.9, weight_decay=wd,
                             eps=1e-3), params, grads_seq)
  trees_close(opt.target, numpy_lamb(params, grads_seq, 0.1, 0.8, 0.9, wd,
                                     1e-3))


def test_matches_optax(params, grads_seq, run_steps, run_optax, trees_close):
  opt = run_steps(optim.LAMB(0.01, weight_decay=0.1), params, grads_seq)
  tx = optax.lamb(0.01, eps=1e-6, weight_decay=0.1)
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)


def test_zero_params_stay_and_zero_update_is_finite():
  opt = optim.LAMB(0.1).create({'z': np.zeros(3, np.float32),
                                'p': np.ones(3, np.float32)})
  opt = opt.apply_gradient({'z': np.ones(3, np.float32),
                            'p': np.zeros(3, np.float32)})
  np.testing.assert_array_equal(opt.target['z'], np.zeros(3))
  np.testing.assert_array_equal(opt.target['p'], np.ones(3))
