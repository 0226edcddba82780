"""Paths inside state dicts, as shown in messages: '/params/Dense_0/kernel'."""
from typing import Any

__all__ = ['join_path', 'display_path']


def join_path(path: str, key: Any) -> str:
  """`path` extended by `key`; keys that contain '/' or are empty are quoted."""
  key = str(key)
  if not key or '/' in key:
    key = repr(key)
  return f'{path}/{key}'


def display_path(path: str) -> str:
  """The root (the empty path) reads as '/'."""
  return path or '/'
