"""RMSProp against the NumPy rule and optax.rmsprop."""
import numpy as np
import optax

from flaxish import optim
from flaxish.optim.rmsprop import _RMSPropHyperParams, _RMSPropParamState


def test_defaults_and_init_state(params):
  opt_def = optim.RMSProp(learning_rate=0.1)
  assert opt_def.hyper_params == _RMSPropHyperParams(0.1, 0.9, 1e-8)
  state = opt_def.init_state(params)
  assert isinstance(state.param_states['b'], _RMSPropParamState)


def test_steps_match_numpy(params, grads_seq, run_steps, trees_close):
  opt = run_steps(optim.RMSProp(0.1, beta2=0.8, eps=0.01), params, grads_seq)
  p = {k: v.astype(np.float64) for k, v in params.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for g in grads_seq:
    for k in p:
      v[k] = 0.8 * v[k] + 0.2 * g[k]**2
      p[k] = p[k] - 0.1 * g[k] / (np.sqrt(v[k]) + 0.01)
  trees_close(opt.target, p)
  trees_close({k: s.v for k, s in opt.state.param_states.items()}, v)


def test_matches_optax_without_eps(params, grads_seq, run_steps, run_optax,
                                   trees_close):
  # optax puts eps inside the square root; with eps=0 the rules coincide.
  opt = run_steps(optim.RMSProp(0.01, beta2=0.9, eps=0.), params, grads_seq)
  tx = optax.rmsprop(0.01, decay=0.9, eps=0.)
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)
