"""Weight normalization as an optimizer wrapper.

Each parameter with more than one row (`p.size > p.shape[-1]`) is optimized
as a direction and a per-output scale, `p = scale * direction / |direction|`,
with norms over all axes but the last (https://arxiv.org/abs/1602.07868).
Other parameters (biases, scalars) are passed to the wrapped optimizer as is.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from flaxish import struct
from flaxish.optim.base import (OptimizerDef, cast_like, check_gradients,
                                is_static_zero, param_state)
from flaxish.optim.wrapper import OptimizerWrapper

__all__ = ['WeightNorm']


@struct.dataclass
class _WeightNormHyperParams:
  inner: Any
  wn_decay: Any
  wn_eps: Any


@param_state
class _WeightNormParamState(NamedTuple):
  direction_state: Any
  scale_state: Any
  mult: Any


def _is_split(param) -> bool:
  return param.ndim > 0 and param.size > param.shape[-1]


def _reduce_axes(param):
  return tuple(range(param.ndim - 1))


class WeightNorm(OptimizerWrapper):
  """Runs `wrapped_optimizer` on weight-normalized parameters.

  Arguments:
    wrapped_optimizer: the `OptimizerDef` that updates directions and scales.
    wn_decay: L2 decay applied to the directions (default 0).
    wn_eps: added to the direction norm when recombining (default 1e-8).
  """

  def __init__(self, wrapped_optimizer: OptimizerDef, wn_decay=0,
               wn_eps=1e-8):
    super().__init__(
        wrapped_optimizer,
        _WeightNormHyperParams(wrapped_optimizer.hyper_params, wn_decay,
                               wn_eps))

  def init_state(self, params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    directions, scales = [], []
    for p in leaves:
      if _is_split(p):
        scale = jnp.sqrt(jnp.sum(jnp.square(p), _reduce_axes(p),
                                 keepdims=True))
        directions.append(p / scale)
        scales.append(scale)
      else:
        directions.append(p)
        scales.append(())
    inner = self.wrapped_optimizer.init_state({
        'direction': treedef.unflatten(directions),
        'scale': treedef.unflatten(scales)})
    return inner.replace(param_states=self._zip_states(
        treedef, inner.param_states, scales))

  def _zip_states(self, treedef, wn_states, mults):
    direction_states = treedef.flatten_up_to(wn_states['direction'])
    scale_states = treedef.flatten_up_to(wn_states['scale'])
    return treedef.unflatten([
        _WeightNormParamState(d, s, m)
        for d, s, m in zip(direction_states, scale_states, mults)])

  def apply_gradient(self, hyper_params, params, state, grads):
    check_gradients(params, grads)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    states = treedef.flatten_up_to(state.param_states)
    grad_leaves = treedef.flatten_up_to(grads)
    d_p, d_s, d_g, s_p, s_s, s_g = [], [], [], [], [], []
    for p, s, g in zip(leaves, states, grad_leaves):
      if _is_split(p):
        axes = _reduce_axes(p)
        direction = p / s.mult
        scale = jnp.sqrt(jnp.sum(jnp.square(p), axes, keepdims=True)) * (
            jnp.sign(s.mult))
        scale_grad = jnp.sum(g * direction, axis=axes, keepdims=True)
        direction_grad = s.mult * (g - scale_grad * direction)
        if not is_static_zero(hyper_params.wn_decay):
          direction_grad = direction_grad + hyper_params.wn_decay * direction
        d_p.append(direction), d_g.append(direction_grad)
        s_p.append(scale), s_g.append(scale_grad)
      else:
        d_p.append(p), d_g.append(g)
        s_p.append(()), s_g.append(())
      d_s.append(s.direction_state)
      s_s.append(s.scale_state)
    unflat = treedef.unflatten
    new_wn, new_inner = self.wrapped_optimizer.apply_gradient(
        hyper_params.inner,
        {'direction': unflat(d_p), 'scale': unflat(s_p)},
        state.replace(param_states={'direction': unflat(d_s),
                                    'scale': unflat(s_s)}),
        {'direction': unflat(d_g), 'scale': unflat(s_g)})
    new_leaves, mults = [], []
    directions = treedef.flatten_up_to(new_wn['direction'])
    scales = treedef.flatten_up_to(new_wn['scale'])
    for p, direction, scale in zip(leaves, directions, scales):
      if _is_split(p):
        norm = jnp.sqrt(jnp.sum(jnp.square(direction), _reduce_axes(p),
                                keepdims=True))
        mult = scale / (hyper_params.wn_eps + norm)
        new_leaves.append(cast_like(direction * mult, p))
        mults.append(mult)
      else:
        new_leaves.append(direction)
        mults.append(())
    new_state = new_inner.replace(param_states=self._zip_states(
        treedef, new_inner.param_states, mults))
    return unflat(new_leaves), new_state
