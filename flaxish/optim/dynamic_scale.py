"""Dynamic loss scaling for mixed-precision (float16) training."""
import functools
from typing import Any, Callable, Sequence, Union

import jax
from jax import lax
import jax.numpy as jnp

from flaxish import struct

__all__ = ['DynamicScale']


@struct.dataclass
class DynamicScale:
  """Scales the loss up before differentiating, so fp16 grads do not underflow;
  after `growth_interval` finite steps the scale grows by `growth_factor`, a
  non-finite step (to be skipped) multiplies it by `backoff_factor`::

    grad_fn = dynamic_scale.value_and_grad(loss_fn, has_aux=True)
    dynamic_scale, is_finite, (loss, aux), grad = grad_fn(optimizer.target)
    new_opt = optimizer.apply_gradient(grad)
    optimizer = jax.tree_util.tree_map(
        functools.partial(jnp.where, is_finite), new_opt, optimizer)

  Attributes:
    growth_factor: scale multiplier after `growth_interval` finite steps (2).
    backoff_factor: scale multiplier after a non-finite step (0.5).
    growth_interval: finite steps needed before growing (2000).
    fin_steps: finite steps since the last change (a pytree leaf).
    scale: the current loss scale (a pytree leaf, default 65536).
  """
  growth_factor: float = struct.field(pytree_node=False, default=2.0)
  backoff_factor: float = struct.field(pytree_node=False, default=0.5)
  growth_interval: int = struct.field(pytree_node=False, default=2000)
  fin_steps: Any = 0
  scale: Any = 65536.0

  def value_and_grad(self, fun: Callable[..., Any],
                     argnums: Union[int, Sequence[int]] = 0,
                     has_aux: bool = False,
                     axis_name: Any = None) -> Callable[..., Any]:
    """`jax.value_and_grad(fun, argnums, has_aux)` with loss scaling; with
    `axis_name`, gradients are `lax.pmean`-ed over that pmap axis before the
    finiteness check. The function returns `(new_dynamic_scale, is_finite,
    value, grad)`: the unscaled loss (or `(loss, aux)`), float32 gradient."""

    @functools.wraps(fun)
    def scaled_fun(*args):
      out = fun(*args)
      if has_aux:
        return self.scale * out[0], out[1]
      return self.scale * out

    grad_fn = jax.value_and_grad(scaled_fun, argnums, has_aux)

    def wrapper(*args):
      value, grad = grad_fn(*args)
      value = ((value[0] / self.scale, value[1]) if has_aux
               else value / self.scale)
      grad = jax.tree_util.tree_map(
          lambda g: jnp.asarray(g, jnp.float32) / self.scale, grad)
      if axis_name is not None:
        grad = lax.pmean(grad, axis_name)
      finite = jnp.array(True)
      for g in jax.tree_util.tree_leaves(grad):
        finite &= jnp.all(jnp.isfinite(g))
      grow = self.fin_steps == self.growth_interval
      fin_scale = jnp.where(grow & finite, self.scale * self.growth_factor,
                            self.scale)
      new_scale = jnp.where(finite, fin_scale,
                            self.scale * self.backoff_factor)
      new_fin_steps = jnp.where(grow | ~finite, 0, self.fin_steps + 1)
      new_self = self.replace(fin_steps=new_fin_steps, scale=new_scale)
      return new_self, finite, value, grad

    return wrapper
