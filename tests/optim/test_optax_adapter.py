"""OptaxOptimizer: optax transformations behind the OptimizerDef API."""
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from flaxish import optim
from flaxish import serialization


def test_matches_optax(params, grads_seq, run_steps, run_optax, trees_close):
  tx = optax.chain(optax.clip_by_global_norm(1.), optax.adamw(0.01, b1=0.8))
  opt = run_steps(optim.OptaxOptimizer(tx), params, grads_seq)
  trees_close(opt.target, run_optax(tx, params, grads_seq), rtol=1e-6,
              atol=1e-6)
  assert int(opt.state.step) == len(grads_seq)


def test_injected_learning_rate_override(params, grads_seq, run_optax,
                                         trees_close):
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
  opt = optim.OptaxOptimizer(tx).create(params)
  step = jax.jit(lambda o, g, lr: o.apply_gradient(g, learning_rate=lr))
  for g in grads_seq:
    opt = step(opt, g, 0.01)
  trees_close(opt.target, run_optax(optax.adam(0.01), params, grads_seq),
              rtol=1e-6, atol=1e-6)


def test_override_errors(params, grads_seq):
  opt = optim.OptaxOptimizer(optax.sgd(0.1)).create(params)
  with pytest.raises(TypeError, match=r"cannot override \['learning_rate'\]: "
                     'this optax transformation has no injectable '
                     'hyper-parameters; build it with '
                     r'optax.inject_hyperparams'):
    opt.apply_gradient(grads_seq[0], learning_rate=0.1)
  opt = optim.OptaxOptimizer(
      optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)).create(params)
  with pytest.raises(TypeError, match=r"cannot override \['beta'\]: the "
                     r"optax transformation has the hyper-parameters "
                     r"\[.*'learning_rate'"):
    opt.apply_gradient(grads_seq[0], beta=0.1)
  with pytest.raises(TypeError, match='needs an optax GradientTransformation'):
    optim.OptaxOptimizer(optim.Adam(0.1))


def test_state_dict_round_trip_through_bytes(params, grads_seq):
  tx = optax.adam(0.01)
  opt = optim.OptaxOptimizer(tx).create(params)
  for g in grads_seq[:2]:
    opt = opt.apply_gradient(g)
  sd = opt.state_dict()
  assert set(sd['state']['param_states']['0']) == {'count', 'mu', 'nu'}
  fresh = optim.OptaxOptimizer(tx).create(params)
  restored = serialization.from_bytes(fresh, serialization.to_bytes(opt))
  for a, b in zip(jax.tree_util.tree_leaves(restored),
                  jax.tree_util.tree_leaves(opt)):
    np.testing.assert_array_equal(a, b)


def test_restore_names_the_missing_state_path(params):
  opt = optim.OptaxOptimizer(optax.adam(0.01)).create(params)
  sd = opt.state_dict()
  del sd['state']['param_states']['0']['nu']
  with pytest.raises(ValueError, match=r'missing /0/nu/.* in the optimizer '
                     'state dict'):
    opt.optimizer_def.restore_state(opt.target, opt.state, sd)


def test_optax_is_not_imported_by_flaxish():
  code = ('import sys, flaxish, flaxish.optim, flaxish.training; '
          'print("optax" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, timeout=120)
  assert out.stdout.strip() == 'False'
