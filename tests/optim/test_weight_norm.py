"""WeightNorm: the 2020 rule in NumPy, and the exact reparametrized step."""
import numpy as np

from flaxish import optim
from flaxish.optim.weight_norm import _WeightNormHyperParams


def numpy_weight_norm_gd(params, grads_seq, lr, wn_decay, wn_eps):
  """Weight norm around gradient descent, the direction/scale bookkeeping of
  the 2020 rule written out."""
  out = {}
  for k, p in params.items():
    p = p.astype(np.float64)
    if p.size <= p.shape[-1]:
      for g in grads_seq:
        p = p - lr * g[k]
      out[k] = p
      continue
    axes = tuple(range(p.ndim - 1))
    mult = np.sqrt((p**2).sum(axes, keepdims=True))
    for g in grads_seq:
      direction = p / mult
      scale = np.sqrt((p**2).sum(axes, keepdims=True)) * np.sign(mult)
      scale_grad = (g[k] * direction).sum(axes, keepdims=True)
      direction_grad = mult * (g[k] - scale_grad * direction)
      direction_grad = direction_grad + wn_decay * direction
      direction = direction - lr * direction_grad
      scale = scale - lr * scale_grad
      norm = np.sqrt((direction**2).sum(axes, keepdims=True))
      mult = scale / (wn_eps + norm)
      p = direction * mult
    out[k] = p
  return out


def test_hyper_params_and_overrides(params):
  opt_def = optim.WeightNorm(optim.Momentum(0.1), wn_decay=0.01)
  hp = opt_def.hyper_params
  assert isinstance(hp, _WeightNormHyperParams)
  assert hp.wn_decay == 0.01 and hp.wn_eps == 1e-8
  new = opt_def.update_hyper_params(learning_rate=0.5, wn_decay=0.2)
  assert new.inner.learning_rate == 0.5 and new.wn_decay == 0.2
  state = opt_def.init_state(params)
  np.testing.assert_allclose(
      state.param_states['w'].mult,
      np.sqrt((params['w']**2).sum(0, keepdims=True)), rtol=1e-6)
  assert state.param_states['b'].mult == ()


def test_steps_match_numpy(params, grads_seq, run_steps, trees_close):
  opt = run_steps(optim.WeightNorm(optim.GradientDescent(0.1), wn_decay=0.05),
                  params, grads_seq)
  trees_close(opt.target,
              numpy_weight_norm_gd(params, grads_seq, 0.1, 0.05, 1e-8),
              rtol=1e-4, atol=1e-5)


def test_first_step_is_gradient_descent_on_scale_and_direction(
    params, grads_seq, trees_close):
  # p = s * v / |v| with |v| = 1 at the start: one GD step on (s, v).
  lr, p, g = 0.1, params['w'].astype(np.float64), grads_seq[0]['w']
  s = np.sqrt((p**2).sum(0, keepdims=True))
  v = p / s
  ds = (g * v).sum(0, keepdims=True)
  dv = s * (g - ds * v)
  v1 = v - lr * dv
  expected = (s - lr * ds) * v1 / np.sqrt((v1**2).sum(0, keepdims=True))
  opt = optim.WeightNorm(optim.GradientDescent(lr)).create(params)
  opt = opt.apply_gradient(grads_seq[0])
  trees_close({'w': opt.target['w']}, {'w': expected})
