"""Weight normalization as an optimizer wrapper."""
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


def _sum_rows(x):
  """The sum over all axes but the last (kept as size-1 axes)."""
  return jnp.sum(x, tuple(range(x.ndim - 1)), keepdims=True)


def _norm(x):
  return jnp.sqrt(_sum_rows(jnp.square(x)))


def _direction_and_scale(p):
  """`(p / |p|, |p|)` for a split parameter, else `(p, ())`."""
  if not _is_split(p):
    return p, ()
  norm = _norm(p)
  return p / norm, norm


def _as_wn(treedef, pairs):
  """`{'direction': tree, 'scale': tree}` from `(direction, scale)` leaves."""
  return {'direction': treedef.unflatten([d for d, _ in pairs]),
          'scale': treedef.unflatten([s for _, s in pairs])}


class WeightNorm(OptimizerWrapper):
  """Runs `wrapped_optimizer` on weight-normalized parameters
  (https://arxiv.org/abs/1602.07868): each parameter with more than one row
  (`p.size > p.shape[-1]`) is optimized as a direction and a per-output
  scale, `p = scale * direction / |direction|`, norms over all axes but the
  last; other parameters (biases, scalars) are passed on as they are.

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
    pairs = [_direction_and_scale(p) for p in leaves]
    inner = self.wrapped_optimizer.init_state(_as_wn(treedef, pairs))
    return inner.replace(param_states=self._zip_states(
        treedef, inner.param_states, [s for _, s in pairs]))

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
    wn_params, wn_grads = [], []
    for p, s, g in zip(leaves, states, treedef.flatten_up_to(grads)):
      if not _is_split(p):
        wn_params.append((p, ()))
        wn_grads.append((g, ()))
        continue
      direction = p / s.mult
      scale = _norm(p) * jnp.sign(s.mult)
      scale_grad = _sum_rows(g * direction)
      direction_grad = s.mult * (g - scale_grad * direction)
      if not is_static_zero(hyper_params.wn_decay):
        direction_grad = direction_grad + hyper_params.wn_decay * direction
      wn_params.append((direction, scale))
      wn_grads.append((direction_grad, scale_grad))
    wn_states = [(s.direction_state, s.scale_state) for s in states]
    new_wn, new_inner = self.wrapped_optimizer.apply_gradient(
        hyper_params.inner, _as_wn(treedef, wn_params),
        state.replace(param_states=_as_wn(treedef, wn_states)),
        _as_wn(treedef, wn_grads))
    new_leaves, mults = [], []
    for p, direction, scale in zip(leaves,
                                   treedef.flatten_up_to(new_wn['direction']),
                                   treedef.flatten_up_to(new_wn['scale'])):
      mult = ()
      if _is_split(p):
        mult = scale / (hyper_params.wn_eps + _norm(direction))
        direction = cast_like(direction * mult, p)
      new_leaves.append(direction)
      mults.append(mult)
    new_state = new_inner.replace(param_states=self._zip_states(
        treedef, new_inner.param_states, mults))
    return treedef.unflatten(new_leaves), new_state
