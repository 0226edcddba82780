"""LARS against the NumPy rule and optax.lars."""
import numpy as np
import optax
import pytest

from flaxish import optim
from flaxish.optim.lars import _LARSHyperParams, _LARSParamState


def numpy_lars(params, grads_seq, lr, beta, wd, tc, eps, nesterov):
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  for g in grads_seq:
    for k in p:
      pn, gn = np.linalg.norm(p[k]), np.linalg.norm(g[k])
      ratio = 1. if pn == 0 or gn == 0 else tc * pn / (gn + wd * pn + eps)
      scaled = lr * ratio * (g[k] + wd * p[k])
      m[k] = beta * m[k] + scaled
      p[k] = p[k] - (scaled + beta * m[k] if nesterov else m[k])
  return p


def test_init_state(params):
  opt_def = optim.LARS(learning_rate=0.1)
  assert opt_def.hyper_params == _LARSHyperParams(0.1, 0.9, 0, 0.001, 0,
                                                  False)
  assert isinstance(opt_def.init_state(params).param_states['w'],
                    _LARSParamState)


@pytest.mark.parametrize('nesterov', [False, True])
@pytest.mark.parametrize('wd', [0., 0.1])
def test_steps_match_numpy(params, grads_seq, run_steps, trees_close, wd,
                           nesterov):
  opt = run_steps(optim.LARS(0.5, beta=0.8, weight_decay=wd,
                             trust_coefficient=0.02, eps=1e-3,
                             nesterov=nesterov), params, grads_seq)
  trees_close(opt.target, numpy_lars(params, grads_seq, 0.5, 0.8, wd, 0.02,
                                     1e-3, nesterov))


def test_matches_optax_without_weight_decay(params, grads_seq, run_steps,
                                            run_optax, trees_close):
  # optax.lars normalizes by |g + wd p| rather than |g| + wd |p|; they agree
  # for wd = 0.
  opt = run_steps(optim.LARS(0.5, beta=0.9, trust_coefficient=0.01),
                  params, grads_seq)
  tx = optax.lars(0.5, weight_decay=0., trust_coefficient=0.01, eps=0.,
                  momentum=0.9)
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)


def test_zero_gradient_keeps_finite():
  opt = optim.LARS(0.1).create({'p': np.ones(3, np.float32)})
  opt = opt.apply_gradient({'p': np.zeros(3, np.float32)})
  np.testing.assert_array_equal(opt.target['p'], np.ones(3))
