"""ClipByGlobalNorm against a hand computation and optax."""
import numpy as np
import optax

from flaxish import optim


def test_clips_to_max_norm_by_hand(params, grads_seq, trees_close):
  g = grads_seq[0]
  norm = np.sqrt(sum(np.sum(v.astype(np.float64)**2) for v in g.values()))
  for max_norm in [norm / 2, norm * 2]:
    opt = optim.ClipByGlobalNorm(optim.GradientDescent(1.0), max_norm).create(
        params).apply_gradient(g)
    factor = min(1., max_norm / norm)
    trees_close(opt.target, {k: params[k] - factor * g[k] for k in params})


def test_matches_optax_chain(params, grads_seq, run_steps, run_optax,
                             trees_close):
  opt = run_steps(optim.ClipByGlobalNorm(optim.Adam(0.01), 1.5), params,
                  grads_seq)
  tx = optax.chain(optax.clip_by_global_norm(1.5), optax.adam(0.01))
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)


def test_state_and_overrides_pass_through(params, grads_seq, trees_close):
  opt_def = optim.ClipByGlobalNorm(optim.Momentum(0.1), max_norm=1.)
  opt = opt_def.create(params)
  assert opt.state.param_states['w']._fields == ('momentum',)
  hp = opt_def.update_hyper_params(learning_rate=0.3, max_norm=1e6)
  assert hp.inner.learning_rate == 0.3 and hp.max_norm == 1e6
  new = opt.apply_gradient(grads_seq[0], learning_rate=0.3, max_norm=1e6)
  trees_close(new.target, {k: params[k] - 0.3 * grads_seq[0][k]
                           for k in params})
  assert set(new.state_dict()['state']['param_states']['w']) == {'momentum'}
