"""Module frames: the per-call scope of a module, and all of its keys.

Every call of a Module class (inside another module's `apply`, or through
`init` / `init_by_shape` / `call`) runs `apply` in a new frame pushed on a
thread-local stack. A frame holds the module's nested params dict and, while
initializing, its key (`rng is None` means apply mode).

Keys (2020 rules): a child's or a parameter's key is
`fold_in(frame_key, h(name))`, `h` the first 4 bytes (big-endian) of the
SHA-1 of the name; a state variable's key is split off the frame's key
(`frame_key, key = split(frame_key)`). With a concrete root key, keys and
initial values are computed eagerly, outside any trace the module runs in
(a `lax.scan` body, `init_by_shape`'s abstract evaluation), so parameters
are concrete. With a traced root key (`jit(init)`), a parameter first made
inside an inner trace (`lax.scan`, `jax.checkpoint`, `lax.cond`) is made
again from the root key once `init` returns, in the root key's own trace,
so that no value of the inner trace escapes it.
"""
import contextlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax

from flaxish.nn._util import CallStack, hash_name, is_tracer, trace_state

__all__ = ['ModuleFrame', 'module_stack', 'check_name']

module_stack: CallStack['ModuleFrame'] = CallStack()

# A step of a key's derivation from the root key: a name hash (fold_in), or
# _FIRST, the first key of a split (what a frame keeps after a state split).
_FIRST = -1


def check_name(name: Any, where: str) -> str:
  """Returns `name` if it is a valid module or parameter name, else raises."""
  if not isinstance(name, str) or not name:
    raise ValueError(f'module and parameter names must be non-empty strings, '
                     f'got {name!r} in {where}')
  if '/' in name or ':' in name:
    raise ValueError(f'invalid name "{name}" in {where}: names cannot contain '
                     '"/" or ":"')
  return name


def _derive(key: Any, steps: Tuple[int, ...]) -> Any:
  for step in steps:
    if step >= 0:
      key = jax.random.fold_in(key, step)
    else:
      key = jax.random.split(key)[-1 - step]
  return key


class _InitRoot:
  """What a root frame knows while initializing: its key and its trace."""
  __slots__ = ('key', 'concrete', 'trace', 'remade', 'reused_paths')

  def __init__(self, key: Any):
    self.key = key
    self.concrete = not is_tracer(key)
    self.trace = None if self.concrete else trace_state()
    # (params dict, name, steps, initializer, shape) to make again in the
    # root key's trace.
    self.remade: List[Tuple[Dict[str, Any], str, Tuple[int, ...],
                            Callable[..., Any], Any]] = []
    self.reused_paths = set()

  def eager(self):
    """Compute-now context for key and initializer work."""
    if self.concrete:
      return jax.ensure_compile_time_eval()
    return contextlib.nullcontext()


class ModuleFrame:
  """The scope of one module call.

  Attributes:
    name: the module's name (None for an unnamed root).
    parent: the enclosing frame, or None for a root (`init` / `call`).
    params: the module's params dict (filled in init mode, read otherwise).
    rng: the frame's key while initializing; None in apply mode.
    reuse: while initializing, given params to use instead of initializers.
    transparent: children of this frame have this frame's path.
  """

  __slots__ = ('name', 'parent', 'params', 'rng', 'reuse', 'root',
               'transparent', 'name_counter', 'children', 'shared_names',
               'param_names', 'path', '_steps', '_init')

  def __init__(self, name: Optional[str], parent: Optional['ModuleFrame'],
               params: Dict[str, Any], rng: Any = None,
               reuse: Optional[Dict[str, Any]] = None,
               transparent: bool = False, steps: Tuple[int, ...] = ()):
    self.name = name
    self.parent = parent
    self.params = params
    self.rng = rng
    self.reuse = reuse
    self.transparent = transparent
    self.root = self if parent is None else parent.root
    self.name_counter = 0
    self.children: Dict[str, bool] = {}  # child name -> is shared
    self.shared_names = set()
    self.param_names = set()
    self._steps = steps  # this frame key's derivation from the root key
    if parent is None:
      self.path = '/' if name is None else '/' + name
      self._init = _InitRoot(rng) if rng is not None else None
    else:
      self.path = (parent.path if parent.transparent else
                   parent.path.rstrip('/') + '/' + name)
      self._init = parent.init_root

  @property
  def is_init(self) -> bool:
    return self.rng is not None

  @property
  def init_root(self) -> Optional[_InitRoot]:
    """The root's key and trace while initializing, else None."""
    return self._init

  @property
  def reused_paths(self):
    """Paths of the parameters taken from `reuse_params` (root frames)."""
    return self._init.reused_paths

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

  # ---- keys -------------------------------------------------------------

  def child_key(self, name: str) -> Any:
    """The key of child module `name`: the frame key folded with its name."""
    with self._init.eager():
      return jax.random.fold_in(self.rng, hash_name(name))

  param_key = child_key

  def next_state_key(self) -> Any:
    """A key for a new state variable, split off the frame's key."""
    with self._init.eager():
      self.rng, key = jax.random.split(self.rng)
    self._steps = self._steps + (_FIRST,)
    return key

  def init_param(self, name: str, initializer: Callable[..., Any],
                 shape: Any) -> Any:
    """`initializer(param_key(name), shape)`, in the root key's trace."""
    init = self._init
    with init.eager():
      value = initializer(self.param_key(name), shape)
    if not init.concrete and trace_state() != init.trace:
      init.remade.append((self.params, name,
                          self._steps + (hash_name(name),), initializer,
                          shape))
    return value

  def init_state(self, initializer: Callable[..., Any], shape: Any) -> Any:
    """The initial value of a state variable (see `next_state_key`)."""
    key = self.next_state_key()
    with self._init.eager():
      return initializer(key, shape)

  def finish_init(self) -> None:
    """Makes again, from the root key, the params made in inner traces."""
    init = self._init
    for params, name, steps, initializer, shape in init.remade:
      params[name] = initializer(_derive(init.key, steps), shape)
    init.remade.clear()

  # ---- children ---------------------------------------------------------

  def child(self, name: str, shared: bool) -> 'ModuleFrame':
    """Opens the frame of child `name` (re-entering it for shared modules)."""
    seen_shared = self.children.get(name)
    if seen_shared is not None and not (shared and seen_shared):
      raise ValueError(
          f'a module named "{name}" already exists in {self.path}: give the '
          'second one another name=, or declare it once with '
          'Module.shared(...) to reuse its parameters')
    self.children[name] = shared
    if self.is_init:
      params = self.params.setdefault(name, {})
      rng = self.child_key(name)
      reuse = self.reuse.get(name) if isinstance(self.reuse, dict) else None
    else:
      params = self.params.get(name, {})
      rng = reuse = None
    if not isinstance(params, dict):
      raise ValueError(f'"{self.path.rstrip("/")}/{name}" is a parameter, not '
                       'a submodule: a module and a parameter cannot share '
                       f'the name "{name}"')
    return ModuleFrame(name, self, params, rng, reuse,
                       steps=self._steps + (hash_name(name),))
