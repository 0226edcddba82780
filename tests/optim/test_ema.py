"""ParameterEMA against a hand computation."""
import jax
import numpy as np

from flaxish import optim
from flaxish import serialization


def test_ema_by_hand(params, grads_seq, trees_close):
  opt = optim.ParameterEMA(optim.GradientDescent(0.1), ema_decay=0.9).create(
      params)
  step = jax.jit(lambda o, g: o.apply_gradient(g))
  p = {k: v.astype(np.float64) for k, v in params.items()}
  ema = dict(p)
  for g in grads_seq:
    opt = step(opt, g)
    p = {k: p[k] - 0.1 * g[k] for k in p}
    ema = {k: 0.9 * ema[k] + 0.1 * p[k] for k in p}
  trees_close(opt.target, p)
  trees_close(opt.state.param_states.ema, ema)
  assert int(opt.state.step) == len(grads_seq)


def test_decay_override_and_state_dict(params, grads_seq, trees_close):
  opt = optim.ParameterEMA(optim.Adam(0.1)).create(params)
  assert opt.optimizer_def.hyper_params.ema_decay == 0.999
  new = opt.apply_gradient(grads_seq[0], ema_decay=0.)
  trees_close(new.state.param_states.ema,
              {k: np.asarray(v) for k, v in new.target.items()})
  sd = serialization.to_state_dict(new)
  assert set(sd['state']['param_states']) == {'inner', 'ema'}
  restored = serialization.from_state_dict(opt, sd)
  np.testing.assert_array_equal(restored.state.param_states.ema['w'],
                                new.state.param_states.ema['w'])
