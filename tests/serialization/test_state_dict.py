"""Tests for the state-dict registry (flaxish.serialization.state_dict)."""
import collections

import numpy as np
import pytest

from flaxish import serialization
from flaxish.serialization import state_dict as state_dict_lib

Pair = collections.namedtuple('Pair', ['first', 'second'])


def test_builtin_layouts():
  assert serialization.to_state_dict([1, (2, 3)]) == {
      '0': 1, '1': {'0': 2, '1': 3}}
  assert serialization.to_state_dict({1: 'a', 'b': [4]}) == {
      '1': 'a', 'b': {'0': 4}}
  assert serialization.to_state_dict(Pair(1, [2])) == {
      'name': 'Pair', 'fields': {'0': 'first', '1': 'second'},
      'values': {'0': 1, '1': {'0': 2}}}
  assert serialization.to_state_dict(
      collections.OrderedDict(a=1)) == {'a': 1}


def test_round_trip_keeps_container_types():
  target = {'l': [0, 0], 't': (0, (0,)), 'n': Pair(0, 0),
            'o': collections.OrderedDict(b=0, a=0), 3: 0}
  state = {'l': {'0': 1, '1': 2}, 't': {'0': 3, '1': {'0': 4}},
           'n': {'name': 'Pair', 'fields': {'0': 'first', '1': 'second'},
                 'values': {'0': 5, '1': 6}},
           'o': {'b': 7, 'a': 8}, '3': 9}
  restored = serialization.from_state_dict(target, state)
  assert restored == {'l': [1, 2], 't': (3, (4,)), 'n': Pair(5, 6),
                      'o': collections.OrderedDict(b=7, a=8), 3: 9}
  assert type(restored['n']) is Pair
  assert type(restored['o']) is collections.OrderedDict
  assert list(restored['o']) == ['b', 'a']


def test_unregistered_types_pass_through():
  obj = object()
  assert serialization.to_state_dict(obj) is obj
  assert serialization.from_state_dict(3, 5) == 5


def test_target_none_gives_the_raw_state():
  state = {'a': {'b': np.ones(2)}, 'c': [1]}
  assert serialization.from_state_dict(None, state) is state
  restored, skipped = serialization.from_state_dict(None, state, strict=False)
  assert restored is state and skipped == []


def test_register_twice_needs_override():
  class Thing:
    pass

  serialization.register_serialization_state(Thing, lambda x: {},
                                             lambda x, s: x)
  assert serialization.is_registered(Thing)
  with pytest.raises(ValueError, match='already registered.*override=True'):
    serialization.register_serialization_state(Thing, lambda x: {},
                                               lambda x, s: x)
  serialization.register_serialization_state(Thing, lambda x: {'v': 1},
                                             lambda x, s: x, override=True)
  assert serialization.to_state_dict(Thing()) == {'v': 1}


class Box:
  """A third-party class with 2020-style handlers (target, state) -> x."""

  def __init__(self, contents, tag):
    self.contents = contents
    self.tag = tag


def _box_to_state(box):
  return {'contents': serialization.to_state_dict(box.contents)}


def _box_from_state(box, state):
  # A 2020 handler: indexes the state and recurses without passing paths.
  return Box(serialization.from_state_dict(box.contents, state['contents']),
             box.tag)


serialization.register_serialization_state(Box, _box_to_state, _box_from_state)


def test_2020_style_handlers_restore_and_are_checked():
  target = {'box': Box({'w': np.zeros((2, 3)), 'b': np.zeros(3)}, 'kept')}
  state = {'box': {'contents': {'w': np.ones((2, 3)), 'b': np.ones(3)}}}
  restored = serialization.from_state_dict(target, state)
  assert restored['box'].tag == 'kept'
  np.testing.assert_array_equal(restored['box'].contents['w'], np.ones((2, 3)))

  bad = {'box': {'contents': {'w': np.ones((2, 4)), 'x': np.ones(1)}}}
  with pytest.raises(serialization.RestoreError) as info:
    serialization.from_state_dict(target, bad)
  message = str(info.value)
  assert '/box/contents/w: shape (2, 4) in the file, (2, 3) in the target' in (
      message)
  assert '/box/contents/b: missing in the file' in message
  assert '/box/contents/x: in the file but not in the target' in message


def test_handlers_get_the_target_structure_when_not_strict():
  seen = []

  class Strict:

    def __init__(self, a):
      self.a = a

  def from_state(x, state):
    seen.append(sorted(state))
    return Strict(serialization.from_state_dict(x.a, state['a']))

  serialization.register_serialization_state(
      Strict, lambda x: {'a': serialization.to_state_dict(x.a)}, from_state)
  restored, skipped = serialization.from_state_dict(
      Strict({'k': np.zeros(2)}), {'b': 1}, strict=False)
  assert seen == [['a']]
  np.testing.assert_array_equal(restored.a['k'], np.zeros(2))
  assert [(p.path, p.kind) for p in skipped] == [('/a', 'missing'),
                                                 ('/b', 'unexpected')]


def test_bad_handler_output_is_reported():
  class Odd:
    pass

  serialization.register_serialization_state(Odd, lambda x: [1],
                                             lambda x, s: x)
  with pytest.raises(TypeError, match='Odd returned a list, not a dict'):
    serialization.to_state_dict(Odd())


def test_dict_keys_must_have_unique_str_forms():
  with pytest.raises(ValueError, match='unique str forms'):
    serialization.to_state_dict({1: 'a', '1': 'b'})


def test_nested_calls_inside_a_handler_skip_the_check():
  # A handler may call from_state_dict(strict=False) on a child: it gets a
  # pair back, with nothing skipped (the state was checked at the top).
  class Wrapper:

    def __init__(self, inner):
      self.inner = inner

  def from_state(x, state):
    inner, skipped = serialization.from_state_dict(x.inner, state['inner'],
                                                   strict=False)
    assert skipped == []
    return Wrapper(inner)

  serialization.register_serialization_state(
      Wrapper, lambda x: {'inner': serialization.to_state_dict(x.inner)},
      from_state)
  restored = serialization.from_state_dict(Wrapper([0]),
                                           {'inner': {'0': 4}})
  assert restored.inner == [4]
  assert not state_dict_lib._inside_restore.get()  # pylint: disable=protected-access


def test_handlers_of_later_flax_pass_the_name():
  class Named:

    def __init__(self, a):
      self.a = a

  serialization.register_serialization_state(
      Named, lambda x: {'a': serialization.to_state_dict(x.a)},
      lambda x, s: Named(serialization.from_state_dict(x.a, s['a'], 'a')))
  assert serialization.from_state_dict(Named([0]), {'a': {'0': 3}}).a == [3]
  with pytest.raises(serialization.RestoreError, match=r'/a/1: in the file'):
    serialization.from_state_dict(Named([0]), {'a': {'0': 3, '1': 4}})
