"""Tests for flaxish.traverse_util."""
import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import struct
from flaxish import traverse_util
from flaxish.traverse_util import t_identity

Point = collections.namedtuple('Point', ['x', 'y'])


@dataclasses.dataclass(frozen=True)
class Pair:
  first: object
  second: object


@struct.dataclass
class StructPair:
  a: object
  b: object


class Plain:

  def __init__(self, value):
    self.value = value


def test_flatten_and_unflatten_round_trip():
  xs = {'a': 1, 'b': {'c': 2, 'd': {'e': 3}}, 'f': {}}
  flat = traverse_util.flatten_dict(xs)
  assert flat == {('a',): 1, ('b', 'c'): 2, ('b', 'd', 'e'): 3}
  # Empty sub-dicts are dropped, as in 2020.
  assert traverse_util.unflatten_dict(flat) == {
      'a': 1, 'b': {'c': 2, 'd': {'e': 3}}}


def test_flatten_keep_empty_nodes():
  xs = {'a': {}, 'b': {'c': 1}}
  flat = traverse_util.flatten_dict(xs, keep_empty_nodes=True)
  assert flat == {('a',): traverse_util.empty_node, ('b', 'c'): 1}
  assert traverse_util.unflatten_dict(flat) == xs


def test_flatten_with_separator():
  xs = {'Dense_0': {'kernel': 1, 'bias': 2}, 'x': 3}
  flat = traverse_util.flatten_dict(xs, sep='/')
  assert flat == {'Dense_0/kernel': 1, 'Dense_0/bias': 2, 'x': 3}
  assert traverse_util.unflatten_dict(flat, sep='/') == xs


def test_flatten_is_leaf_stops_recursion():
  xs = {'a': {'b': {'c': 1}}}
  flat = traverse_util.flatten_dict(xs, is_leaf=lambda path, _: len(path) == 2)
  assert flat == {('a', 'b'): {'c': 1}}


def test_flatten_rejects_non_dict():
  with pytest.raises(TypeError, match='expects a dict'):
    traverse_util.flatten_dict([1, 2])


def test_identity_iterate_update_set():
  assert list(t_identity.iterate(3)) == [3]
  assert t_identity.update(lambda x: x + 1, 3) == 4
  assert t_identity.set([7], 3) == 7


def test_item_on_dict_list_tuple_and_slice():
  xs = {'a': [1, 2, 3], 'b': (4, 5)}
  assert list(t_identity['a'][1].iterate(xs)) == [2]
  assert t_identity['a'][1].update(lambda x: -x, xs) == {
      'a': [1, -2, 3], 'b': (4, 5)}
  assert t_identity['b'][0].set([0], xs) == {'a': [1, 2, 3], 'b': (0, 5)}
  assert list(t_identity['a'][1:].iterate(xs)) == [2, 3]
  assert t_identity['a'][::2].update(lambda x: x * 10, xs)['a'] == [10, 2, 30]
  assert xs == {'a': [1, 2, 3], 'b': (4, 5)}  # inputs are not modified


def test_item_and_attr_on_namedtuple():
  p = Point(1, 2)
  assert list(t_identity['y'].iterate(p)) == [2]
  assert list(t_identity[0].iterate(p)) == [1]
  assert t_identity['x'].update(lambda v: v + 10, p) == Point(11, 2)
  assert t_identity[1].set([0], p) == Point(1, 0)
  assert t_identity.y.set([5], p) == Point(1, 5)
  assert isinstance(t_identity.y.set([5], p), Point)


def test_item_and_attr_on_dataclasses():
  pair = Pair(1, {'k': 2})
  assert t_identity.first.update(lambda v: v * 3, pair) == Pair(3, {'k': 2})
  assert t_identity['second']['k'].set([9], pair) == Pair(1, {'k': 9})
  sp = StructPair(a=1, b=2)
  assert t_identity.b.set([5], sp) == StructPair(a=1, b=5)


def test_attr_on_plain_object_copies():
  obj = Plain(4)
  new = t_identity.value.update(lambda v: v + 1, obj)
  assert new.value == 5 and obj.value == 4


def test_each_on_list_tuple_dict():
  assert list(t_identity.each().iterate([1, 2])) == [1, 2]
  assert t_identity.each().update(lambda x: x * 2, (1, 2)) == (2, 4)
  assert t_identity.each().update(lambda x: x * 2, {'a': 1, 'b': 2}) == {
      'a': 2, 'b': 4}
  assert t_identity.each().set([5, 6], Point(1, 2)) == Point(5, 6)


def test_tree_filter_compose_merge():
  xs = {'a': [1, -2], 'b': {'c': 3}}
  assert list(t_identity.tree().iterate(xs)) == [1, -2, 3]
  positive = t_identity.tree().filter(lambda x: x > 0)
  assert list(positive.iterate(xs)) == [1, 3]
  assert positive.update(lambda x: 0, xs) == {'a': [0, -2], 'b': {'c': 0}}
  composed = t_identity['a'].compose(t_identity.each())
  assert list(composed.iterate(xs)) == [1, -2]
  merged = t_identity.merge(t_identity['b']['c'], t_identity['a'][0])
  assert list(merged.iterate(xs)) == [3, 1]
  assert merged.set([30, 10], xs) == {'a': [10, -2], 'b': {'c': 30}}


ROWS = [{'foo': 1, 'bar': 2}, {'foo': 3, 'bar': 4}]


def test_merge_applies_the_traversals_to_each_selected_part():
  # t.merge(a, b) is t.compose(TraverseMerge(a, b)), as in 2020: a and b run
  # on every part t selects, here each dict of a list.
  t = t_identity.each().merge(t_identity['foo'], t_identity['bar'])
  assert list(t.iterate(ROWS)) == [1, 2, 3, 4]
  assert t.update(lambda x: -x, ROWS) == [{'foo': -1, 'bar': -2},
                                          {'foo': -3, 'bar': -4}]
  assert t.set([10, 20, 30, 40], ROWS) == [{'foo': 10, 'bar': 20},
                                           {'foo': 30, 'bar': 40}]
  assert ROWS == [{'foo': 1, 'bar': 2}, {'foo': 3, 'bar': 4}]
  nested = {'layers': ROWS}
  t = t_identity['layers'].merge(t_identity[0]['foo'], t_identity[1]['bar'])
  assert list(t.iterate(nested)) == [1, 4]
  assert t.update(lambda x: x * 100, nested) == {
      'layers': [{'foo': 100, 'bar': 2}, {'foo': 3, 'bar': 400}]}


def test_update_and_set_over_lists_of_dicts():
  foo = t_identity.each()['foo']
  assert list(foo.iterate(ROWS)) == [1, 3]
  assert foo.update(lambda x: x + 1, ROWS) == [{'foo': 2, 'bar': 2},
                                               {'foo': 4, 'bar': 4}]
  assert foo.set([7, 8], ROWS) == [{'foo': 7, 'bar': 2}, {'foo': 8, 'bar': 4}]
  assert t_identity[1]['bar'].set([0], ROWS) == [{'foo': 1, 'bar': 2},
                                                 {'foo': 3, 'bar': 0}]
  every = t_identity.each().each()
  assert list(every.iterate(ROWS)) == [1, 2, 3, 4]
  assert every.set([5, 6, 7, 8], ROWS) == [{'foo': 5, 'bar': 6},
                                           {'foo': 7, 'bar': 8}]
  big = t_identity.each().tree().filter(lambda x: x > 2)
  assert big.update(lambda x: 0, ROWS) == [{'foo': 1, 'bar': 2},
                                           {'foo': 0, 'bar': 0}]
  # flatten_dict keeps lists as leaves, as in 2020.
  assert traverse_util.flatten_dict({'rows': ROWS, 'n': {'k': 2}}) == {
      ('rows',): ROWS, ('n', 'k'): 2}


def test_tree_on_arrays():
  xs = {'w': jnp.ones(2), 'b': np.zeros(3)}
  out = t_identity.tree().update(lambda x: x + 1, xs)
  np.testing.assert_allclose(out['w'], [2, 2])
  np.testing.assert_allclose(out['b'], [1, 1, 1])


def test_set_count_mismatch_raises():
  t = t_identity.each()
  with pytest.raises(ValueError, match='got 1 values but the traversal '
                     'selects more parts'):
    t.set([1], [0, 0])
  with pytest.raises(ValueError, match='got 3 values but the traversal '
                     'selects 2 parts'):
    t.set([1, 2, 3], [0, 0])


def test_each_on_unsupported_type():
  with pytest.raises(TypeError, match='each\\(\\) needs a list'):
    t_identity.each().update(lambda x: x, 3)


def test_path_str_formats_every_kind_of_key():
  tree = {'Dense_0': {'kernel': 1}, 'a/b': [2, (3,)], '': 4}
  paths = [traverse_util.path_str(p) for p, _ in
           jax.tree_util.tree_leaves_with_path(tree)]
  assert sorted(paths) == sorted(["/''", '/Dense_0/kernel', "/'a/b'/0",
                                  "/'a/b'/1/0"])
  assert traverse_util.path_str([]) == '/'
  assert traverse_util.path_str(['params', 3, 'bias']) == '/params/3/bias'
