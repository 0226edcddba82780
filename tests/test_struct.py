"""Tests for flaxish.struct: frozen pytree dataclasses and their state dicts."""
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import serialization, struct


@struct.dataclass
class Point:
  x: Any
  y: Any
  label: str = struct.field(pytree_node=False, default='p')


@struct.dataclass
class Outer:
  point: Point
  extra: Any = struct.field(default_factory=lambda: {'z': np.zeros(2)})


def test_frozen_and_replace():
  p = Point(1.0, 2.0)
  with pytest.raises(dataclasses.FrozenInstanceError):
    p.x = 3.0
  q = p.replace(x=3.0)
  assert (q.x, q.y, q.label) == (3.0, 2.0, 'p')
  assert p.x == 1.0


def test_pytree_children_and_static_fields():
  p = Point(np.ones(2), np.zeros(3), label='a')
  leaves, treedef = jax.tree_util.tree_flatten(p)
  assert len(leaves) == 2
  np.testing.assert_array_equal(leaves[0], np.ones(2))
  # The static field is part of the structure, not a leaf.
  assert treedef != jax.tree_util.tree_structure(p.replace(label='b'))
  doubled = jax.tree_util.tree_map(lambda v: v * 2, p)
  assert doubled.label == 'a'
  np.testing.assert_array_equal(doubled.x, 2 * np.ones(2))


def test_paths_name_the_fields():
  paths = [jax.tree_util.keystr(path) for path, _ in
           jax.tree_util.tree_flatten_with_path(Outer(Point(1, 2)))[0]]
  assert paths == ['.point.x', '.point.y', ".extra['z']"]


def test_goes_through_jit_and_grad():
  @jax.jit
  def f(p):
    return p.replace(x=p.x + 1)

  out = f(Point(jnp.float32(1), jnp.float32(2), label='k'))
  assert float(out.x) == 2.0 and out.label == 'k'
  grads = jax.grad(lambda p: p.x * p.y)(Point(3.0, 4.0))
  assert (float(grads.x), float(grads.y)) == (4.0, 3.0)


def test_state_dict_skips_static_fields_and_restores():
  p = Point(np.arange(3.0), np.float32(5), label='target')
  state = serialization.to_state_dict(Outer(p))
  assert set(state) == {'point', 'extra'}
  assert set(state['point']) == {'x', 'y'}
  new_state = {'point': {'x': np.arange(3.0) + 10, 'y': np.float32(7)},
               'extra': {'z': np.ones(2)}}
  restored = serialization.from_state_dict(Outer(p), new_state)
  assert isinstance(restored, Outer) and restored.point.label == 'target'
  np.testing.assert_array_equal(restored.point.x, np.arange(3.0) + 10)
  np.testing.assert_array_equal(restored.extra['z'], np.ones(2))


def test_restore_reports_missing_and_unknown_fields():
  with pytest.raises(ValueError) as info:
    serialization.from_state_dict(Point(1.0, 2.0), {'x': 1.0, 'w': 3.0})
  message = str(info.value)
  assert '/y: missing in the file' in message
  assert '/w: in the file but not in the target' in message


def test_handler_called_directly_checks_fields():
  to_state, from_state = serialization.state_dict._REGISTRY[Point]  # pylint: disable=protected-access
  assert to_state(Point(1, 2)) == {'x': 1, 'y': 2}
  with pytest.raises(ValueError, match=r"lacks the field\(s\) \['y'\]"):
    from_state(Point(1, 2), {'x': 1})


def test_init_false_fields_and_post_init_are_restored():
  @struct.dataclass
  class WithDerived:
    a: Any
    b: Any = dataclasses.field(init=False, default=0)

    def __post_init__(self):
      object.__setattr__(self, 'b', self.a * 2)

  w = WithDerived(3)
  assert w.b == 6
  restored = serialization.from_state_dict(w, {'a': 5, 'b': 11})
  assert (restored.a, restored.b) == (5, 11)  # restored as saved
  leaves, treedef = jax.tree_util.tree_flatten(w)
  assert jax.tree_util.tree_unflatten(treedef, leaves).b == 6


def test_own_init_post_init_and_init_vars_survive_tree_operations():
  calls = []

  @struct.dataclass
  class Scaled:
    value: Any
    scale: float = struct.field(pytree_node=False, default=1.)

    def __init__(self, raw, scale=1.):  # takes another argument than the field
      object.__setattr__(self, 'value', raw * scale)
      object.__setattr__(self, 'scale', scale)

  @struct.dataclass
  class Checked:
    value: Any

    def __post_init__(self):
      calls.append(self.value)

  @struct.dataclass
  class WithInitVar:
    value: Any
    unit: dataclasses.InitVar[str]  # required by __init__, not a field

  w = jax.tree_util.tree_map(lambda v: v * 2, WithInitVar(1.5, 'm'))
  assert w.value == 3.
  s = jax.tree_util.tree_map(lambda v: v + 1, Scaled(2., scale=3.))
  assert (s.value, s.scale) == (7., 3.)
  c = jax.jit(lambda c: jax.tree_util.tree_map(lambda v: v * 2, c))(
      Checked(jnp.ones(2)))
  np.testing.assert_array_equal(c.value, [2., 2.])
  assert len(calls) == 1  # the constructor call, not the rebuilds


def test_dataclass_twice_is_a_no_op():
  assert struct.dataclass(Point) is Point


def test_pytree_node_subclasses():
  class Params(struct.PyTreeNode):
    w: Any
    scale: float = struct.field(pytree_node=False, default=1.0)

  p = Params(np.ones(2), scale=0.5)
  assert jax.tree_util.tree_leaves(p)[0].shape == (2,)
  assert p.replace(scale=2.0).scale == 2.0
  assert serialization.to_state_dict(p).keys() == {'w'}
  with pytest.raises(dataclasses.FrozenInstanceError):
    p.w = 1


def test_field_passes_dataclass_options():
  f = struct.field(pytree_node=False, default=3, metadata={'doc': 'x'})
  assert f.default == 3 and f.metadata['doc'] == 'x'
  assert f.metadata['pytree_node'] is False
