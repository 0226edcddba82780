"""A small MLP for the overhead of one un-jitted call.

`nn.Model(MLP, params)(x)` (flaxish), `module.apply({'params': params}, x)`
(Linen) and hand-written `mlp(params, x)` (plain JAX) run the same eager JAX
operations; the difference in time per call is the library's Python
overhead.
"""
import dataclasses
from typing import Any, Callable, Dict

import jax

from flaxish import nn
from benchmarks.workloads import plain
from benchmarks.workloads.base import have_flax

PRESETS = {'tiny': dict(batch=2, width=8, depth=2),
           'cpu': dict(batch=8, width=64, depth=3),
           'gpu': dict(batch=8, width=64, depth=3)}


class MLP(nn.Module):
  """`depth` Dense+relu layers of `width`, then Dense(10)."""

  def apply(self, x, width, depth):
    for _ in range(depth):
      x = nn.relu(nn.Dense(x, width))
    return nn.Dense(x, 10)


def plain_mlp(params, x, depth):
  for i in range(depth):
    x = jax.nn.relu(plain.dense(params[f'Dense_{i}'], x))
  return plain.dense(params[f'Dense_{depth}'], x)


@dataclasses.dataclass(frozen=True)
class CallOverhead:
  """Zero-argument callables, one per implementation, that apply the MLP
  (un-jitted) to the same params and input."""
  title: str
  config: Dict[str, Any]
  calls: Dict[str, Callable[[], Any]]


def make(batch=8, width=64, depth=3) -> CallOverhead:
  module = MLP.partial(width=width, depth=depth)
  x = jax.random.normal(jax.random.PRNGKey(1), (batch, width))
  _, params = module.init(jax.random.PRNGKey(0), x)
  model = nn.Model(module, params)
  calls = {'flaxish': lambda: model(x),
           'plain_jax': lambda: plain_mlp(params, x, depth)}
  if have_flax():
    import flax.linen as ln  # pylint: disable=g-import-not-at-top

    class LinenMLP(ln.Module):

      @ln.compact
      def __call__(self, x):
        for i in range(depth):
          x = ln.relu(ln.Dense(width, name=f'Dense_{i}')(x))
        return ln.Dense(10, name=f'Dense_{depth}')(x)

    linen_model, variables = LinenMLP(), {'params': params}
    calls['linen'] = lambda: linen_model.apply(variables, x)
  title = (f'MLP {depth} x Dense({width}) + Dense(10), batch {batch}, '
           'un-jitted call')
  return CallOverhead(title, dict(batch=batch, width=width, depth=depth),
                      calls)
