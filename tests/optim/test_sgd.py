"""GradientDescent against the NumPy rule and optax.sgd."""
import numpy as np
import optax
import pytest

from flaxish import optim
from flaxish.optim.sgd import _GradientDescentHyperParams


def test_init_state(params):
  opt_def = optim.GradientDescent(learning_rate=0.1)
  assert opt_def.hyper_params == _GradientDescentHyperParams(0.1)
  state = opt_def.init_state(params)
  assert int(state.step) == 0
  assert state.param_states == {'w': (), 'b': ()}


def test_steps_match_numpy_and_optax(params, grads_seq, run_steps, run_optax,
                                     trees_close):
  opt = run_steps(optim.GradientDescent(0.3), params, grads_seq)
  expected = {k: v.astype(np.float64) for k, v in params.items()}
  for g in grads_seq:
    expected = {k: expected[k] - 0.3 * g[k] for k in expected}
  trees_close(opt.target, expected)
  assert int(opt.state.step) == len(grads_seq)
  trees_close(opt.target, run_optax(optax.sgd(0.3), params, grads_seq),
              rtol=1e-6, atol=1e-6)


def test_learning_rate_override(params, grads_seq, run_steps, trees_close):
  opt = run_steps(optim.GradientDescent(), params, grads_seq[:1],
                  learning_rate=0.5)
  trees_close(opt.target, {k: params[k] - 0.5 * grads_seq[0][k]
                           for k in params})


def test_missing_learning_rate(params, grads_seq):
  opt = optim.GradientDescent().create(params)
  with pytest.raises(ValueError, match=r'GradientDescent: no learning_rate '
                     r'given. Pass it when building the optimizer, e\.g\. '
                     r'GradientDescent\(learning_rate=0\.1\), or at every '
                     r'step: optimizer.apply_gradient\(grads, '
                     r'learning_rate=lr\)'):
    opt.apply_gradient(grads_seq[0])
