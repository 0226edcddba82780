"""Adagrad against the NumPy rule and optax.adagrad."""
import numpy as np
import optax

from flaxish import optim
from flaxish.optim.adagrad import _AdagradHyperParams, _AdagradParamState


def test_init_state(params):
  opt_def = optim.Adagrad(learning_rate=0.1, eps=0.01)
  assert opt_def.hyper_params == _AdagradHyperParams(0.1, 0.01)
  state = opt_def.init_state(params)
  assert isinstance(state.param_states['w'], _AdagradParamState)
  np.testing.assert_array_equal(state.param_states['w'].G, np.zeros((3, 4)))


def test_steps_match_numpy(params, grads_seq, run_steps, trees_close):
  opt = run_steps(optim.Adagrad(0.2, eps=0.01), params, grads_seq)
  p = {k: v.astype(np.float64) for k, v in params.items()}
  G = {k: np.zeros_like(v)  # pylint: disable=invalid-name
       for k, v in p.items()}
  for g in grads_seq:
    for k in p:
      G[k] = G[k] + g[k]**2
      p[k] = p[k] - 0.2 * g[k] / (np.sqrt(G[k]) + 0.01)
  trees_close(opt.target, p)
  trees_close({k: s.G for k, s in opt.state.param_states.items()}, G)


def test_matches_optax_without_eps(params, grads_seq, run_steps, run_optax,
                                   trees_close):
  # optax puts eps inside the square root; with eps=0 the rules coincide.
  opt = run_steps(optim.Adagrad(0.2, eps=0.), params, grads_seq)
  tx = optax.adagrad(0.2, initial_accumulator_value=0., eps=0.)
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)
