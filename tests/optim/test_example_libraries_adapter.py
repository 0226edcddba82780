"""ExampleLibrariesOptimizer: jax.example_libraries.optimizers triples."""
import jax
from jax.example_libraries import optimizers
import numpy as np
import pytest

from flaxish import optim


def test_matches_the_triple(params, grads_seq, run_steps, trees_close):
  triple = optimizers.momentum(lambda i: 0.1 / (i + 1), mass=0.9)
  opt = run_steps(optim.ExampleLibrariesOptimizer(triple), params, grads_seq)
  init_fun, update_fun, get_params = triple
  state = init_fun(params)
  for i, g in enumerate(grads_seq):
    state = update_fun(i, g, state)
  trees_close(opt.target, {k: np.asarray(v)
                           for k, v in get_params(state).items()})


def test_jit_state_dict_and_no_overrides(params, grads_seq):
  opt_def = optim.ExampleLibrariesOptimizer(optimizers.adam(0.01))
  opt = opt_def.create(params)
  opt = jax.jit(lambda o, g: o.apply_gradient(g))(opt, grads_seq[0])
  restored = opt_def.create(params).restore_state(opt.state_dict())
  for a, b in zip(jax.tree_util.tree_leaves(restored),
                  jax.tree_util.tree_leaves(opt)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(TypeError, match=r"cannot override \['learning_rate'\]: "
                     'an example_libraries optimizer fixes its step size'):
    opt.apply_gradient(grads_seq[0], learning_rate=0.1)
  with pytest.raises(TypeError, match=r'needs an \(init_fun, update_fun, '
                     r'get_params\) triple'):
    optim.ExampleLibrariesOptimizer(optim.Adam(0.1))
