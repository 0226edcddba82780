"""Module frames: the per-call scope that holds a module's parameters.

Every call of a Module class (inside another module's `apply`, or through
`init` / `init_by_shape` / `call`) runs `apply` in a new frame pushed on a
thread-local stack. A frame holds the module's nested params dict, and while
initializing, its rng. `rng is None` means apply mode.
"""
import contextlib
from typing import Any, Dict, Optional

import jax

from flaxish.nn import _param_init
from flaxish.nn.utils import CallStack, is_tracer

module_stack: CallStack['ModuleFrame'] = CallStack()

def eager_if_concrete(rng: Any):
  """`jax.ensure_compile_time_eval()` when `rng` is a concrete key.

  Initialization computes parameters from the rng alone, so with a concrete
  rng they are concrete too, even when a module is first called inside a
  `lax.scan` body or under `init_by_shape`. A traced rng (`jit(init)`) stays
  traced.
  """
  if is_tracer(rng):
    return contextlib.nullcontext()
  return jax.ensure_compile_time_eval()


def fold_in_name(rng: Any, name: str) -> Any:
  """The key of a child or parameter: `fold_in(rng, sha1(name)[:4])`.

  With a concrete `rng` the result is a `LazyKey` (nothing computed yet; see
  `_param_init`); with a traced one, a traced key.
  """
  return _param_init.fold_in_name(rng, name)


def check_name(name: Any, where: str) -> str:
  if not isinstance(name, str) or not name:
    raise ValueError(f'module and parameter names must be non-empty strings, '
                     f'got {name!r} in {where}')
  if '/' in name or ':' in name:
    raise ValueError(f'invalid name "{name}" in {where}: names cannot contain '
                     '"/" or ":"')
  return name


class ModuleFrame:
  """The scope of one module call.

  Attributes:
    name: the module's name (None for an unnamed root).
    parent: the enclosing frame, or None for a root (`init` / `call`).
    params: the module's params dict (filled in init mode, read otherwise).
    rng: the frame's key while initializing (a traced key, or a
      `_param_init.LazyKey` for a concrete one); None in apply mode.
    reuse: while initializing, given params to use instead of initializers.
  """

  __slots__ = ('name', 'parent', 'params', 'rng', 'reuse', 'root',
               'name_counter', 'children', 'shared_names', 'param_names',
               '_path', 'reused_paths')

  def __init__(self, name: Optional[str], parent: Optional['ModuleFrame'],
               params: Dict[str, Any], rng: Any = None,
               reuse: Optional[Dict[str, Any]] = None):
    self.name = name
    self.parent = parent
    self.params = params
    self.rng = rng
    self.reuse = reuse
    self.root = self if parent is None else parent.root
    self.name_counter = 0
    self.children: Dict[str, bool] = {}  # child name -> is shared
    self.shared_names = set()
    self.param_names = set()
    self._path = None
    self.reused_paths = set() if parent is None else None

  @property
  def is_init(self) -> bool:
    return self.rng is not None

  @property
  def path(self) -> str:
    """The module path: '/' for an unnamed root, '/a/b' below it."""
    if self._path is None:
      if self.parent is None:
        self._path = '/' if self.name is None else '/' + self.name
      else:
        self._path = self.parent.path.rstrip('/') + '/' + self.name
    return self._path

  def default_child_name(self, class_name: str) -> str:
    """`ClassName_k`, with one counter per frame shared by all classes."""
    name = f'{class_name}_{self.name_counter}'
    self.name_counter += 1
    return name

  def is_descendant_of(self, other: 'ModuleFrame') -> bool:
    frame = self
    while frame is not None:
      if frame is other:
        return True
      frame = frame.parent
    return False

  def child(self, name: str, shared: bool) -> 'ModuleFrame':
    """Opens the frame of child `name` (re-entering it for shared modules)."""
    seen_shared = self.children.get(name)
    if seen_shared is not None and not (shared and seen_shared):
      raise ValueError(
          f'a module named "{name}" already exists in {self.path}: give the '
          'second one another name=, or declare it once with '
          'Module.shared(...) to reuse its parameters')
    self.children[name] = shared
    child_path = self.path.rstrip('/') + '/' + name
    if self.is_init:
      params = self.params.setdefault(name, {})
      rng = fold_in_name(self.rng, name)
      reuse = self.reuse.get(name) if isinstance(self.reuse, dict) else None
    else:
      params = self.params.get(name, {})
      rng = reuse = None
    if not isinstance(params, dict):
      raise ValueError(f'"{child_path}" is a parameter, not a submodule: a '
                       'module and a parameter cannot share the name '
                       f'"{name}"')
    frame = ModuleFrame(name, self, params, rng, reuse)
    frame._path = child_path
    return frame
