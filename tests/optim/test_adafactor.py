"""Adafactor against the NumPy rule and optax.adafactor."""
import numpy as np
import optax
import pytest

from flaxish import optim
from flaxish.optim.adafactor import _AdafactorParamState


def numpy_adafactor(params, grads_seq, lr, beta1, decay_rate, clip, wd,
                    min_dim, eps1=1e-30, eps2=1e-3, scale_by_param=True):
  p = {k: v.astype(np.float64) for k, v in params.items()}
  state = {k: {} for k in p}
  for step, g in enumerate(grads_seq):
    decay = 1. - (step + 1.)**(-decay_rate)
    for k in p:
      x, gk, s = p[k], g[k].astype(np.float64), state[k]
      g2 = gk**2 + eps1
      shape = x.shape
      order = np.argsort(shape, kind='stable')
      if x.ndim >= 2 and shape[order[-2]] >= min_dim:
        d1, d0 = int(order[-2]), int(order[-1])
        s['vr'] = decay * s.get('vr', 0.) + (1 - decay) * g2.mean(axis=d0)
        s['vc'] = decay * s.get('vc', 0.) + (1 - decay) * g2.mean(axis=d1)
        r_axis = d1 - 1 if d1 > d0 else d1
        row = s['vr'] / s['vr'].mean(axis=r_axis, keepdims=True)
        v_hat = np.expand_dims(row, d0) * np.expand_dims(s['vc'], d1)
      else:
        s['v'] = decay * s.get('v', 0.) + (1 - decay) * g2
        v_hat = s['v']
      y = gk / np.sqrt(v_hat)
      if clip is not None:
        y = y / max(1., np.sqrt(np.mean(y**2)) / clip)
      scale = lr * (max(np.sqrt(np.mean(x**2)), eps2) if scale_by_param
                    else 1.)
      step_ = scale * y
      if beta1 is not None:
        s['m'] = beta1 * s.get('m', 0.) + (1 - beta1) * step_
        step_ = s['m']
      p[k] = (1 - wd) * x - step_ if wd is not None else x - step_
  return p


def test_state_shapes():
  params = {'big': np.zeros((4, 6, 5), np.float32),
            'small': np.zeros((2, 3), np.float32)}
  opt_def = optim.Adafactor(learning_rate=0.1, beta1=0.9,
                            min_dim_size_to_factor=5)
  states = opt_def.init_state(params).param_states
  big, small = states['big'], states['small']
  assert isinstance(big, _AdafactorParamState)
  # Factored over the two largest axes: 1 (size 6) and 2 (size 5).
  assert big.v_row.shape == (4, 5) and big.v_col.shape == (4, 6)
  assert big.v.shape == (1,) and big.m.shape == (4, 6, 5)
  assert small.v.shape == (2, 3) and small.v_row.shape == (1,)
  no_momentum = optim.Adafactor(0.1).init_state(params).param_states
  assert no_momentum['big'].m.shape == (1,)


@pytest.mark.parametrize('beta1,clip,wd', [(None, 1.0, None),
                                           (0.9, 0.5, 0.01),
                                           (None, None, None)])
def test_steps_match_numpy(params, grads_seq, run_steps, trees_close, beta1,
                           clip, wd):
  params = dict(params, t=np.random.RandomState(2).randn(2, 5, 3).astype(
      np.float32))
  rng = np.random.RandomState(3)
  grads_seq = [dict(g, t=rng.randn(2, 5, 3).astype(np.float32))
               for g in grads_seq]
  opt_def = optim.Adafactor(0.1, beta1=beta1, clipping_threshold=clip,
                            weight_decay_rate=wd, min_dim_size_to_factor=3)
  opt = run_steps(opt_def, params, grads_seq)
  trees_close(opt.target, numpy_adafactor(params, grads_seq, 0.1, beta1, 0.8,
                                          clip, wd, 3))


def test_matches_optax(params, grads_seq, run_steps, run_optax, trees_close):
  opt = run_steps(optim.Adafactor(0.05, weight_decay_rate=0.01,
                                  min_dim_size_to_factor=3),
                  params, grads_seq)
  tx = optax.adafactor(0.05, min_dim_size_to_factor=3,
                       weight_decay_rate=0.01)
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)
