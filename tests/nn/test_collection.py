"""Tests of flaxish.nn.collection: Collection, stateful, ModuleState."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn, serialization
from tests.nn._helpers import Counter

X = jnp.ones((2, 3))


class Net(nn.Module):

  def apply(self, x):
    return Counter(Counter(x, name='a'), name='b')


def test_init_train_eval_idioms():
  with nn.stateful() as state:
    _, params = Net.init(jax.random.PRNGKey(0), X)
  assert state.as_dict() == {'/a': {'count': 0.}, '/b': {'count': 0.}}
  with nn.stateful(state) as new_state:
    Net.call(params, X)
  assert new_state['/a']['count'] == 1 and state['/a']['count'] == 0
  with nn.stateful(new_state) as newer:
    Net.call(params, X)
  assert newer['/b']['count'] == 2
  with nn.stateful(newer, mutable=False):
    with pytest.raises(ValueError, match='cannot store state for "/a": the '
                       'Collection is immutable'):
      Net.call(params, X)


def test_explicit_collection_argument_and_retrieve():

  class Explicit(nn.Module):
    def apply(self, x, stats):
      s = self.state('total', (), jax.nn.initializers.zeros, collection=stats)
      if not self.is_initializing():
        s.value = s.value + x.sum()
      return stats.retrieve()

  with nn.Collection().mutate() as stats:
    Explicit.init(jax.random.PRNGKey(0), X, stats=stats)
  with stats.mutate() as new_stats:
    seen = Explicit.call({}, X, stats=new_stats)
  assert seen == {'total': 6.}
  assert new_stats['/']['total'] == 6. and stats['/']['total'] == 0.
  assert '/' in new_stats


def test_state_without_a_collection_is_an_error():
  with pytest.raises(ValueError, match='module "/a" uses state "count" but '
                     'no Collection is active'):
    Net.init(jax.random.PRNGKey(0), X)
  with pytest.raises(ValueError, match='no active state'):
    nn.get_state()


def test_uninitialized_state_read_is_an_error():
  with nn.stateful():
    with pytest.raises(ValueError, match='no state variable "count" for '
                       'module "/a"'):
      Net.call({}, X)


def test_immutable_collection_is_a_pytree_through_jit():
  with nn.stateful() as state:
    Net.init(jax.random.PRNGKey(0), X)

  @jax.jit
  def step(state):
    with nn.stateful(state) as new_state:
      Net.call({}, X)
    return new_state

  new_state = step(step(state))
  assert float(new_state['/b']['count']) == 2.
  assert jax.tree_util.tree_leaves(new_state) == [2., 2.]


def test_mutable_collection_cannot_be_passed_into_jit():
  with nn.stateful() as state:
    with pytest.raises(ValueError, match='mutable Collection cannot be '
                       'passed through a JAX transformation'):
      jax.jit(lambda s: s)(state)


def test_collection_made_mutable_outside_jit_cannot_store_traced_values():
  with nn.stateful() as state:
    Net.init(jax.random.PRNGKey(0), X)
  with nn.stateful(state) as new_state:
    with pytest.raises(ValueError, match='cannot store a traced value for '
                       '"/a": this Collection was made mutable outside the '
                       'current JAX transformation'):
      jax.jit(lambda x: Net.call({}, x))(X)

  # The same for grad (flax issue #339).
  class Scale(nn.Module):
    def apply(self, x):
      s = self.state('last', (), jax.nn.initializers.zeros)
      s.value = x.sum()
      return x.sum()

  with nn.stateful():
    with pytest.raises(ValueError, match='cannot store a traced value'):
      jax.grad(lambda x: Scale.call({}, x))(X)


def test_storing_outside_the_anchor_subtree_is_an_error():

  class Inner(nn.Module):
    def apply(self, x, stats):
      stats.store(x)
      return x

  class Outer(nn.Module):
    def apply(self, x):
      with nn.Collection().mutate() as local:
        Inner(x, stats=local, name='inner')
      return local.as_dict(), OtherBranch(x, stats=local)

  class OtherBranch(nn.Module):
    def apply(self, x, stats):
      return stats.retrieve()

  class Leaky(nn.Module):
    def apply(self, x):
      with nn.Collection().mutate() as local:
        Inner(x, stats=local, name='inner')
      return local

  class Root(nn.Module):
    def apply(self, x):
      local = Leaky(x, name='leaky')
      with local.mutate() as m:
        Inner(x, stats=m, name='elsewhere')

  (anchored, _), _ = Outer.init(jax.random.PRNGKey(0), X)
  assert list(anchored) == ['/inner']
  with pytest.raises(ValueError, match='module "/elsewhere" is outside the '
                     'subtree of "/leaky"'):
    Root.init(jax.random.PRNGKey(0), X)


def test_two_unnamed_roots_cannot_share_a_collection():
  with nn.stateful():
    Counter.init(jax.random.PRNGKey(0), X)
    with pytest.raises(ValueError, match='two unnamed top-level modules'):
      Counter.call({}, X)
  with nn.stateful() as state:
    Counter.init(jax.random.PRNGKey(0), X, name='one')
    Counter.init(jax.random.PRNGKey(0), X, name='two')
  assert sorted(state.as_dict()) == ['/one', '/two']


def test_store_outside_a_module_is_an_error():
  with nn.Collection().mutate() as c:
    with pytest.raises(ValueError, match='inside a Module.apply'):
      c.store(1)


def test_collection_state_dict_round_trip():
  with nn.stateful() as state:
    Net.init(jax.random.PRNGKey(0), X)
  state_dict = serialization.to_state_dict(state)
  assert state_dict == {'/a': {'count': 0.}, '/b': {'count': 0.}}
  state_dict['/a']['count'] = 5.
  restored = serialization.from_state_dict(state, state_dict)
  assert isinstance(restored, nn.Collection) and restored['/a']['count'] == 5.


def test_is_stateful():
  seen = []

  class Probe(nn.Module):
    def apply(self, x):
      seen.append(self.is_stateful())
      return x

  Probe.init(jax.random.PRNGKey(0), X)
  with nn.stateful():
    Probe.init(jax.random.PRNGKey(0), X)
  assert seen == [False, True]
  assert not nn.base.is_stateful()


def test_the_2020_collection_flatten_functions():
  from flaxish.nn import base  # pylint: disable=g-import-not-at-top
  collection = nn.Collection({'/a': 1., '/b': {'x': 2.}})
  children, meta = base.iterate_collection(collection)
  assert children == ({'/a': 1., '/b': {'x': 2.}},)
  rebuilt = base.collection_from_iterable(meta, children)
  assert type(rebuilt) is nn.Collection
  assert rebuilt.as_dict() == collection.as_dict()
  with nn.Collection().mutate() as mutable:
    with pytest.raises(ValueError, match='mutable Collection'):
      base.iterate_collection(mutable)


def test_module_state_has_a_name():

  class Counter(nn.Module):
    def apply(self):
      count = self.state('count', (), jax.nn.initializers.zeros)
      assert count.name == 'count'
      count.value += 1
      return count.value

  with nn.stateful() as state:
    Counter.init(jax.random.PRNGKey(0))
  assert state.as_dict() == {'/': {'count': 1.}}
