"""Momentum against the NumPy rule and optax.sgd(momentum=...)."""
import numpy as np
import optax
import pytest

from flaxish import optim
from flaxish.optim.momentum import _MomentumHyperParams, _MomentumParamState


def numpy_momentum(params, grads_seq, lr, beta, wd, nesterov):
  p = {k: v.astype(np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  for g in grads_seq:
    for k in p:
      gk = g[k] + wd * p[k]
      m[k] = beta * m[k] + gk
      step = gk + beta * m[k] if nesterov else m[k]
      p[k] = p[k] - lr * step
  return p, m


def test_init_state(params):
  opt_def = optim.Momentum(learning_rate=0.1, beta=0.2, weight_decay=0.01,
                           nesterov=True)
  assert opt_def.hyper_params == _MomentumHyperParams(0.1, 0.2, 0.01, True)
  state = opt_def.init_state(params)
  assert isinstance(state.param_states['w'], _MomentumParamState)
  np.testing.assert_array_equal(state.param_states['w'].momentum,
                                np.zeros((3, 4)))


@pytest.mark.parametrize('nesterov', [False, True])
@pytest.mark.parametrize('wd', [0., 0.1])
def test_steps_match_numpy(params, grads_seq, run_steps, trees_close,
                           nesterov, wd):
  opt = run_steps(optim.Momentum(0.1, beta=0.8, weight_decay=wd,
                                 nesterov=nesterov), params, grads_seq)
  p, m = numpy_momentum(params, grads_seq, 0.1, 0.8, wd, nesterov)
  trees_close(opt.target, p)
  trees_close({k: s.momentum for k, s in opt.state.param_states.items()}, m)


@pytest.mark.parametrize('nesterov', [False, True])
def test_matches_optax(params, grads_seq, run_steps, run_optax, trees_close,
                       nesterov):
  opt = run_steps(optim.Momentum(0.1, beta=0.9, weight_decay=0.01,
                                 nesterov=nesterov), params, grads_seq)
  tx = optax.chain(optax.add_decayed_weights(0.01),
                   optax.sgd(0.1, momentum=0.9, nesterov=nesterov))
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)


def test_overrides_per_step(params, grads_seq, run_steps, trees_close):
  opt = run_steps(optim.Momentum(0.1), params, grads_seq, learning_rate=0.05,
                  beta=0.5, weight_decay=0.2)
  p, _ = numpy_momentum(params, grads_seq, 0.05, 0.5, 0.2, False)
  trees_close(opt.target, p)
