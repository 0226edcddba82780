"""Tests of flaxish.nn._init_plan: a repeated `init` makes its parameters in
one compiled call, with the values of an eager computation, and anything the
plan does not cover is made as without one."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from flaxish.nn import _init_plan
from flaxish.nn import _param_init
from tests.nn.test_param_init import (TOKENS, X, Zoo, _assert_identical,
                                      _fold, _reference)

init = jax.nn.initializers
# Trusted initializers, each used for several parameters of one shape (the
# plan's program loops over those) and once for another shape.
REPEATED = [init.normal(0.02), init.lecun_normal(),
            init.variance_scaling(0.3, 'fan_avg', 'uniform'),
            init.orthogonal(1.3)]
# What the modules below look like; tests change it between calls.
ARCH = {'late': False, 'width': 3}


class Repeated(nn.Module):

  def apply(self, x):
    for i, initializer in enumerate(REPEATED):
      for j in range(2):
        self.param(f'w{i}_{j}', (129, 3), initializer)
      self.param(f'v{i}', (5, 4), initializer)
    return x


class Tower(nn.Module):
  """Zoo (every kind of library parameter and state), equal Dense layers,
  BatchNorm state and a shared module."""

  def apply(self, x, tokens):
    y = Zoo(x, tokens, name='zoo')
    h = x
    for i in range(3):
      h = nn.Dense(h, 4, name=f'same_{i}')
    h = nn.BatchNorm(h, use_running_average=True, name='bn')
    shared = nn.Dense.shared(features=4, name='shared')
    h = shared(shared(h))
    return y + Late(h, name='late').sum()


class Late(nn.Module):
  """State first, then (depending on ARCH) a child made from the key that
  is left after the state's splits."""

  def apply(self, x):
    s = self.state('s', (3,), init.normal(1.0))
    if ARCH['late']:
      x = nn.Dense(x, 2, name='after_state')
    return nn.Dense(x, ARCH['width'], name='out') + s.value.sum()


def _tower_reference(rng):
  """Tower's params and state, eager from keys derived in the test."""
  zoo_params, zoo_state = _reference(_fold(rng, 'zoo'))
  lecun = init.lecun_normal()

  def dense(key, n_in, n_out):
    return {'kernel': lecun(_fold(key, 'kernel'), (n_in, n_out)),
            'bias': jnp.zeros((n_out,))}

  params = {'zoo': zoo_params,
            'bn': {'scale': jnp.ones((4,)), 'bias': jnp.zeros((4,))},
            'shared': dense(_fold(rng, 'shared'), 4, 4)}
  for i, n_in in enumerate((4, 4, 4)):
    params[f'same_{i}'] = dense(_fold(rng, f'same_{i}'), n_in, 4)
  late_key, state_key = jax.random.split(_fold(rng, 'late'))
  params['late'] = {}
  n_in = 4
  if ARCH['late']:
    params['late']['after_state'] = dense(_fold(late_key, 'after_state'), 4,
                                          2)
    n_in = 2
  params['late']['out'] = dense(_fold(late_key, 'out'), n_in, ARCH['width'])
  state = {'/zoo' + path: value for path, value in zoo_state.items()}
  state['/bn'] = {'mean': jnp.zeros((4,)), 'var': jnp.ones((4,))}
  state['/late'] = {'s': init.normal(1.0)(state_key, (3,))}
  return params, state


@pytest.fixture(autouse=True)
def fresh_plans(monkeypatch):
  """No plans from other tests; ARCH as declared."""
  monkeypatch.setattr(_init_plan, '_plans', collections.OrderedDict())
  monkeypatch.setitem(ARCH, 'late', False)
  monkeypatch.setitem(ARCH, 'width', 3)


@pytest.fixture
def calls(monkeypatch):
  """Counts compiled calls: per parameter, per split, whole plans."""
  counts = collections.Counter()

  def counting(name, fn):
    def wrapped(*args, **kwargs):
      counts[name] += 1
      return fn(*args, **kwargs)
    return wrapped

  compiled_initializer = _param_init._compiled_initializer
  def counted_initializer(initializer, shape):
    fn, cache_key = compiled_initializer(initializer, shape)
    return (None if fn is None else counting('param', fn)), cache_key

  monkeypatch.setattr(_param_init, '_compiled_initializer',
                      counted_initializer)
  monkeypatch.setattr(_param_init, '_chain_split',
                      counting('split', _param_init._chain_split))
  monkeypatch.setattr(_init_plan._Plan, 'compute',
                      counting('plan', _init_plan._Plan.compute))
  return counts


def _init_tower(rng, by_shape=False):
  with nn.stateful() as state:
    if by_shape:
      _, params = Tower.init_by_shape(
          rng, [X.shape, (TOKENS.shape, jnp.int32)])
    else:
      _, params = Tower.init(rng, X, TOKENS)
  return params, state.as_dict()


def _without_plans(fn, *args):
  """`fn(*args)` with no plan to replay, and its plan forgotten after."""
  saved = _init_plan._plans
  _init_plan._plans = collections.OrderedDict()
  try:
    return fn(*args)
  finally:
    _init_plan._plans = saved


@pytest.mark.parametrize('make_key', [jax.random.PRNGKey, jax.random.key],
                         ids=['raw_key', 'typed_key'])
def test_a_replayed_init_matches_the_eager_reference_bit_for_bit(
    make_key, calls):
  rng = make_key(7)
  expected = _tower_reference(rng)
  # The plan of a call is used once a second call asked for the same.
  first = _init_tower(rng)
  second = _init_tower(rng, by_shape=True)
  assert calls['plan'] == 0 and calls['param'] > 40 and calls['split'] > 6
  calls.clear()
  replayed = _init_tower(rng, by_shape=True)
  again = _init_tower(rng)
  # Every trusted parameter and every state key came from the plan's one
  # call; only the bfloat16 (eager) parameters were made on their own.
  assert calls == {'plan': 2}
  for result in (first, second, replayed, again):
    _assert_identical(result, expected)
  for leaf in jax.tree_util.tree_leaves(replayed):
    assert not isinstance(leaf, jax.core.Tracer)


def test_initializers_looped_over_in_the_plan_give_their_eager_values(calls):
  rng = jax.random.PRNGKey(3)
  expected = {}
  for i, initializer in enumerate(REPEATED):
    for j in range(2):
      expected[f'w{i}_{j}'] = initializer(_fold(rng, f'w{i}_{j}'), (129, 3))
    expected[f'v{i}'] = initializer(_fold(rng, f'v{i}'), (5, 4))
  for _ in range(3):
    _assert_identical(Repeated.init(rng, X)[1], expected)
  assert calls['plan'] == 1 and calls['param'] == 2 * len(expected)


def test_groups_too_large_to_stack_are_made_one_by_one(calls, monkeypatch):
  # 2 x (129, 3) float32 per initializer: 3096 bytes stacked.
  monkeypatch.setattr(_init_plan, '_MAX_STACKED_BYTES', 3000)
  rng = jax.random.PRNGKey(3)
  first = Repeated.init(rng, X)[1]
  Repeated.init(rng, X)
  calls.clear()
  _assert_identical(Repeated.init(rng, X)[1], first)
  assert calls == {'plan': 1, 'param': 2 * len(REPEATED)}


def test_another_rng_gives_its_own_values(calls):
  _init_tower(jax.random.PRNGKey(0))
  _init_tower(jax.random.PRNGKey(0))
  calls.clear()
  rng = jax.random.PRNGKey(1)
  replayed = _init_tower(rng)
  assert calls == {'plan': 1}
  _assert_identical(replayed, _tower_reference(rng))
  _assert_identical(replayed, _without_plans(_init_tower, rng))


def test_a_changed_module_is_made_as_without_a_plan(calls):
  rng = jax.random.PRNGKey(2)
  _init_tower(rng)
  _init_tower(rng)
  ARCH['late'] = True  # a new child after Late's state: its key comes
  ARCH['width'] = 5    # from the split the plan served; 'out' changes
  calls.clear()
  changed = _init_tower(rng)
  assert calls['plan'] == 1
  # Only Late's Dense parameters are new or changed (and the bfloat16 ones
  # are eager as always).
  assert calls['param'] == 4 and calls['split'] == 0
  _assert_identical(changed, _tower_reference(rng))
  _assert_identical(changed, _without_plans(_init_tower, rng))
  # The changed call's requests replace the plan, used once asked again.
  calls.clear()
  _assert_identical(_init_tower(rng), _tower_reference(rng))
  assert calls['plan'] == 0 and calls['param'] > 20
  calls.clear()
  _assert_identical(_init_tower(rng), _tower_reference(rng))
  assert calls == {'plan': 1}


def test_different_input_shapes_keep_their_own_plans(calls):
  rng = jax.random.PRNGKey(4)
  wide = jnp.ones((2, 6))
  for x in (X, wide) * 3:
    _, params = nn.Dense.init(rng, x, 3)
    _assert_identical(params, _without_plans(nn.Dense.init, rng, x, 3)[1])
  assert calls['plan'] == 2
  assert len(_init_plan._plans) == 2


def test_a_plan_is_used_only_if_its_first_request_matches(calls):

  class FirstChanges(nn.Module):
    def apply(self, x):
      return nn.Dense(x, ARCH['width'], name='a') + nn.Dense(x, 1, name='b')

  rng = jax.random.PRNGKey(5)
  FirstChanges.init(rng, X)
  FirstChanges.init(rng, X)
  ARCH['width'] = 5
  for expect_plan in (0, 0, 1):
    calls.clear()
    _, params = FirstChanges.init(rng, X)
    assert calls['plan'] == expect_plan
    _assert_identical(params, _without_plans(FirstChanges.init, rng, X)[1])


def test_a_traced_rng_neither_uses_nor_records_plans(calls):
  rng = jax.random.PRNGKey(6)
  _init_tower(rng)
  eager = _init_tower(rng)
  plans = dict(_init_plan._plans)
  calls.clear()
  traced = jax.jit(_init_tower)(rng)
  assert calls['plan'] == 0 and dict(_init_plan._plans) == plans
  _assert_identical(traced, eager)


def test_user_initializers_and_reused_params_are_not_replayed(calls):
  user_calls = []

  def my_init(key, shape):
    user_calls.append(key)
    return jnp.full(shape, 2.0) + jax.random.uniform(key, shape)

  class Net(nn.Module):
    def apply(self, x):
      w = self.param('w', (2,), my_init)
      return nn.Dense(x, 2, name='d') + w

  rng = jax.random.PRNGKey(7)
  reuse = {'d': {'bias': jnp.arange(2.)}}
  first = Net.init(rng, X, reuse_params=reuse)[1]
  Net.init(rng, X, reuse_params=reuse)
  third = Net.init(rng, X, reuse_params=reuse)[1]
  assert calls['plan'] == 1 and len(user_calls) == 3
  _assert_identical(third, first)
  assert third['d']['bias'] is reuse['d']['bias']
  np.testing.assert_array_equal(
      third['w'], 2. + jax.random.uniform(_fold(rng, 'w'), (2,)))


def test_a_failing_plan_program_falls_back(calls, monkeypatch):
  rng = jax.random.PRNGKey(8)
  _init_tower(rng)
  _init_tower(rng)

  def broken(self, root):
    calls['broken'] += 1
    raise RuntimeError('no program')

  monkeypatch.setattr(_init_plan._Plan, 'compute', broken)
  calls.clear()
  for _ in range(2):
    _assert_identical(_init_tower(rng), _tower_reference(rng))
  assert calls['broken'] == 1 and calls['param'] > 40


def test_plans_are_bounded_and_hold_no_arrays(monkeypatch):
  monkeypatch.setattr(_init_plan, '_MAX_PLANS', 2)
  rng = jax.random.PRNGKey(9)
  for features in range(1, 5):
    for _ in range(3):
      nn.Dense.init(rng, X, features)
  assert len(_init_plan._plans) == 2
  for plan in _init_plan._plans.values():
    parts = (plan.entries, plan.initializers, plan.keys.where)
    assert not any(isinstance(leaf, jax.Array)
                   for leaf in jax.tree_util.tree_leaves(parts))
