"""Tests for state-dict paths in messages."""
from flaxish.serialization.paths import display_path, join_path


def test_paths():
  assert join_path('', 'params') == '/params'
  assert join_path('/params', 0) == '/params/0'
  assert join_path('/state', '/BatchNorm_0') == "/state/'/BatchNorm_0'"
  assert join_path('', '') == "/''"
  assert display_path('') == '/'
  assert display_path('/a') == '/a'
