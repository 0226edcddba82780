"""Tests for flaxish.serialization.state_dict: registry, matching, casts."""
import collections

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from flaxish import nn, serialization
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
  with pytest.raises(TypeError, match=r'the state-dict handler of Odd '
                     r'returned \[1\], not a dict with str keys'):
    serialization.to_state_dict(Odd())
  serialization.register_serialization_state(Odd, lambda x: {1: 2},
                                             lambda x, s: x, override=True)
  with pytest.raises(TypeError, match=r'returned \{1: 2\}, not a dict with '):
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
  # pylint: disable-next=protected-access
  assert not state_dict_lib._inside_restore.get()


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


# Strict matching and casting.


def _target():
  return {'params': {'Dense_0': {'kernel': np.zeros((3, 5), np.float32),
                                 'bias': np.zeros(5, np.float32)},
                     'Dense_1': {'kernel': np.zeros((5, 2), np.float32)}},
          'step': 0}


def _file():
  return {'params': {'Dense_0': {'kernel': np.ones((3, 4), np.float32),
                                 'bias': np.ones(5, np.int16) * 7},
                     'Dense_9': {'kernel': np.ones((5, 2), np.float32)}},
          'step': np.int32(7)}


def test_one_error_lists_every_bad_path():
  with pytest.raises(serialization.RestoreError) as info:
    serialization.from_state_dict(_target(), _file())
  error = info.value
  assert isinstance(error, ValueError)
  lines = str(error).splitlines()
  assert lines[0] == ('the state does not match the target (1 missing, '
                      '1 unexpected, 1 mismatched):')
  assert lines[1:4] == [
      '  /params/Dense_0/kernel: shape (3, 4) in the file, (3, 5) in the '
      'target',
      '  /params/Dense_1: missing in the file (the target has a subtree of 1 '
      'leaf)',
      '  /params/Dense_9: in the file but not in the target (a subtree of 1 '
      'leaf)']
  assert 'strict=False' in lines[-1]


def test_not_strict_restores_what_matches():
  target = _target()
  restored, skipped = serialization.from_state_dict(target, _file(),
                                                    strict=False)
  assert restored['params']['Dense_0']['kernel'] is (
      target['params']['Dense_0']['kernel'])
  assert restored['params']['Dense_1'] == target['params']['Dense_1']
  assert 'Dense_9' not in restored['params']
  # int16 -> float32 is a safe cast: the values are replaced, as float32.
  bias = restored['params']['Dense_0']['bias']
  assert bias.dtype == np.float32 and (bias == 7).all()
  assert restored['step'] == 7
  assert {p.path: p.kind for p in skipped} == {
      '/params/Dense_0/kernel': 'mismatch', '/params/Dense_1': 'missing',
      '/params/Dense_9': 'unexpected'}
  unexpected = [p for p in skipped if p.kind == 'unexpected'][0]
  np.testing.assert_array_equal(unexpected.value['kernel'], np.ones((5, 2)))


@pytest.mark.parametrize('src,dst', [
    (np.float64, np.float32), (np.float32, np.float64),
    (np.float32, ml_dtypes.bfloat16), (ml_dtypes.bfloat16, np.float32),
    (np.int32, np.int64), (np.int64, np.int32), (np.uint8, np.int32),
    (np.int8, np.float32), (np.bool_, np.int32), (np.complex128, np.complex64)])
def test_safe_casts_replace_the_values_in_the_target_dtype(src, dst):
  values = np.arange(6).reshape(2, 3) % 2
  restored = serialization.from_state_dict(
      {'w': np.zeros((2, 3), dst)}, {'w': values.astype(src)})
  assert restored['w'].dtype == np.dtype(dst)
  np.testing.assert_array_equal(restored['w'], values.astype(dst))


def test_float64_numpy_state_restores_a_float32_model():
  # Flax 0.2.2's own serialization test: a float32 model, float64 values.
  model = nn.Dense.partial(features=3)
  _, params = model.init_by_shape(jax.random.PRNGKey(0), [((1, 2),
                                                            jnp.float32)])
  target = nn.Model(model, params)
  state = {'params': {'kernel': np.full((2, 3), 0.5),
                      'bias': np.arange(3.0)}}
  restored = serialization.from_state_dict(target, state)
  assert restored.params['kernel'].dtype == np.float32
  np.testing.assert_array_equal(restored.params['bias'], [0.0, 1.0, 2.0])


@pytest.mark.parametrize('src,dst', [
    (np.float32, np.int32), (np.float64, np.uint8), (np.int32, np.uint32),
    (np.complex64, np.float32), (np.int64, np.float32), (np.float32, np.bool_)])
def test_unsafe_casts_are_mismatches(src, dst):
  with pytest.raises(serialization.RestoreError) as info:
    serialization.from_state_dict({'a': {'w': np.zeros(2, dst)},
                                   'b': np.zeros(3, dst)},
                                  {'a': {'w': np.ones(2, src)},
                                   'b': np.ones(4, src)})
  src, dst = np.dtype(src), np.dtype(dst)
  assert [str(p) for p in info.value.problems] == [
      f'/a/w: dtype {src} in the file, {dst} in the target (an unsafe cast)',
      f'/b: shape (4,) in the file, (3,) in the target; dtype {src} in the '
      f'file, {dst} in the target (an unsafe cast)']


def test_leaf_against_subtree_and_root_paths():
  _, skipped = serialization.from_state_dict({'a': {'b': 1}},
                                             {'a': np.ones(2)}, strict=False)
  assert [str(p) for p in skipped] == [
      '/a: float64[2] in the file, a subtree of 1 leaf in the target']
  _, skipped = serialization.from_state_dict(np.zeros(3), np.zeros(4),
                                             strict=False)
  assert [str(p) for p in skipped] == [
      '/: shape (4,) in the file, (3,) in the target']


def test_python_numbers_strings_and_none():
  def problems(target, state):
    return [str(p) for p in serialization.from_state_dict(
        target, state, strict=False)[1]]
  assert problems({'a': 1, 'b': 1.0, 'c': np.zeros(())},
                  {'a': 2.5, 'b': np.float32(2), 'c': 3}) == []
  assert problems({'a': 1.0}, {'a': np.ones(2)}) == [
      '/a: float64[2] in the file, the float 1.0 in the target']
  assert problems({'name': 'Pair', 'n': None}, {'name': 'Other', 'n': None}) \
      == []
  assert problems({'x': None, 'y': b'a'}, {'x': 'a', 'y': 'b'}) == [
      "/x: the str 'a' in the file, None in the target",
      "/y: the str 'b' in the file, the bytes b'a' in the target"]
  assert problems({'/D': {'m': np.zeros(2)}}, {'/D': {'m': np.zeros(3)}}) == [
      "/'/D'/m: shape (3,) in the file, (2,) in the target"]


def test_abstract_targets_and_typed_prng_keys():
  target = {'w': jax.ShapeDtypeStruct((2, 3), jnp.float32)}
  restored = serialization.from_state_dict(
      target, {'w': np.ones((2, 3), np.float16)})
  assert restored['w'].dtype == np.float32
  keys = jax.random.split(jax.random.key(3), 4)
  state = serialization.msgpack_restore(serialization.to_bytes({'k': keys}))
  assert state['k'].dtype == np.uint32 and state['k'].shape == (4, 2)
  _, skipped = serialization.from_state_dict({'k': jax.random.key(0)}, state,
                                             strict=False)
  assert skipped[0].kind == 'mismatch'  # one key vs four
  restored = serialization.from_state_dict({'k': keys}, state)
  assert jax.dtypes.issubdtype(restored['k'].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(restored['k']),
                                jax.random.key_data(keys))
