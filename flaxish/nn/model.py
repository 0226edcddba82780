"""`Model`: a Module class bundled with its parameters, as a pytree.

    model = nn.Model(MLP, params)
    y = model(x)                      # MLP.call(params, x)
    grads = jax.grad(loss)(model)     # a Model of gradients

The module is static (part of the tree structure), the params are the leaves.
A Model serializes as `{'params': ...}`.
"""
from typing import Any, Dict, Type

import jax

from flaxish import struct
from flaxish.nn import modules as module_lib

__all__ = ['Model', 'truncated_module']


@struct.dataclass
class Model:
  """A Module class with its params.

  Attributes:
    module: the Module class (static).
    params: the nested params dict.
  """
  module: Type[module_lib.Module] = struct.field(pytree_node=False)
  params: Any

  __hash__ = object.__hash__

  def __call__(self, *args, **kwargs) -> Any:
    return self.module.call(self.params, *args, **kwargs)

  def __getattr__(self, name: str) -> Any:
    if name.startswith('__') or 'module' not in self.__dict__:
      raise AttributeError(name)
    value = getattr(self.module, name, None)
    if isinstance(value, type) and getattr(value, '_is_module_method', False):
      return lambda *args, **kwargs: value.call(self.params, *args, **kwargs)
    methods = sorted(
        n for c in self.module.__mro__ for n, v in vars(c).items()
        if getattr(v, 'is_module_method', False))
    raise AttributeError(
        f'Model of {self.module.__name__} has no attribute or module_method '
        f'"{name}" (its module methods: {methods})')

  def truncate_at(self, module_path: Any) -> 'Model':
    """A Model that returns the outputs of the submodules at the given paths.

    Arguments:
      module_path: a path like '/Dense_0' ('/' is the whole module), or a
        pytree of paths; the output has the same structure.
    """
    return self.replace(module=truncated_module(self.module, module_path))

  def summary(self, *inputs, **kwargs) -> Any:
    """Prints and returns `nn.tabulate` of this model on `inputs`."""
    from flaxish.nn.summary import tabulate  # pylint: disable=g-import-not-at-top
    return tabulate(self, *inputs, **kwargs)


def truncated_module(module: Type[module_lib.Module],
                     module_path: Any) -> Type[module_lib.Module]:
  """A subclass of `module` that returns intermediate outputs.

  For a submodule called several times, its last output is returned.
  """
  paths, treedef = jax.tree_util.tree_flatten(module_path)
  for path in paths:
    if not isinstance(path, str) or not path.startswith('/'):
      raise ValueError(f'truncate_at expects module paths like "/Dense_0", '
                       f'got {path!r}')
  wrapped_apply = module.apply

  def apply(self, *args, **kwargs):
    with module_lib.capture_module_outputs() as outputs:
      y = wrapped_apply(self, *args, **kwargs)
    found: Dict[str, Any] = {'/': y}
    for path, values in outputs.state.items():
      found.setdefault(path, values[-1])
    missing = [p for p in paths if p not in found]
    if missing:
      raise ValueError(f'truncate_at: no module at {missing}; the module '
                       f'paths are {sorted(found)}')
    return jax.tree_util.tree_unflatten(treedef, [found[p] for p in paths])

  return type(module.__name__, (module,), {
      'apply': apply, '__module__': module.__module__,
      '__qualname__': module.__qualname__})
