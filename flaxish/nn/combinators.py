"""Combinators: `Sequential` for plain lists of layers, and a bridge that
wraps a `jax.example_libraries.stax` layer `(init_fun, apply_fun)` as a Module.
"""
from typing import Any, Callable, Sequence, Tuple, Type

from flaxish.nn import stochastic as stochastic_lib
from flaxish.nn.modules import Module

__all__ = ['Sequential', 'stax_module']


class Sequential(Module):
  """Applies `layers` in order: Module classes become children (named
  `ClassName_k`), plain functions are applied as they are.

      MLP = nn.Sequential.partial(layers=[nn.Dense.partial(features=64),
                                          nn.relu,
                                          nn.Dense.partial(features=10)])
  """

  def apply(self, x: Any, layers: Sequence[Any] = ()) -> Any:
    for layer in layers:
      if not callable(layer):
        raise TypeError(f'{self.path}: Sequential layers must be Module '
                        f'classes or functions, got {layer!r}')
      x = layer(x)
    return x


def stax_module(layer: Tuple[Callable[..., Any], Callable[..., Any]],
                name: str = 'StaxModule') -> Type[Module]:
  """Wraps a stax layer `(init_fun, apply_fun)` as a Module class.

  The stax parameters (any pytree) are stored as one parameter named
  `params`. Inside `nn.stochastic`, `apply_fun` gets `rng=nn.make_rng()`
  unless an rng is passed explicitly (stax `Dropout` needs one).

  Arguments:
    layer: the `(init_fun, apply_fun)` pair, e.g. `stax.serial(...)`.
    name: the class name (also the default child name prefix).
  """
  init_fun, apply_fun = layer

  def apply(self, inputs, **kwargs):
    params = self.param(
        'params', None, lambda key, _: init_fun(key, inputs.shape)[1])
    if 'rng' not in kwargs and stochastic_lib.is_stochastic():
      kwargs['rng'] = stochastic_lib.make_rng()
    return apply_fun(params, inputs, **kwargs)

  return type(name, (Module,), {'apply': apply, '__doc__': stax_module.__doc__})
