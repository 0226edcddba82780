"""The flaxish side of a workload: an `nn.Module`, an `optim` rule, and the
train/eval steps written as in the 2020 examples."""
from typing import Any, Dict, Optional

import jax

from flaxish import nn
from benchmarks.workloads.base import Impl, accuracy, cross_entropy

__all__ = ['make_impl', 'stats_to_collection', 'collection_to_stats']


def stats_to_collection(stats: Dict[str, Any]) -> nn.Collection:
  """Nested `{'a': {'bn': {'mean', 'var'}}}` -> Collection `{'/a/bn': ..}`."""
  flat = {}

  def walk(node, path):
    if all(not isinstance(v, dict) for v in node.values()):
      flat[path or '/'] = dict(node)
    else:
      for k, v in node.items():
        walk(v, f'{path}/{k}')

  if stats:
    walk(stats, '')
  return nn.Collection(flat)


def collection_to_stats(collection: Optional[nn.Collection]) -> Dict[str, Any]:
  """The inverse of `stats_to_collection`."""
  nested: Dict[str, Any] = {}
  for path, value in (collection.as_dict() if collection else {}).items():
    node = nested
    for part in path.strip('/').split('/')[:-1]:
      node = node.setdefault(part, {})
    node[path.strip('/').split('/')[-1]] = dict(value)
  return nested


def make_impl(module, input_spec, optimizer_def, stateful: bool = False,
              train_kwargs=None, eval_kwargs=None) -> Impl:
  """An `Impl` for a flaxish classifier (or LM) `module`.

  Arguments:
    module: the `nn.Module` class, hyper-parameters bound with `.partial`.
    input_spec: `(shape, dtype)` of the model input.
    optimizer_def: e.g. `optim.Momentum(0.1, beta=0.9)`.
    stateful: the model keeps state (BatchNorm) in `nn.stateful()`.
    train_kwargs / eval_kwargs: keyword arguments of the module's apply in
      each mode (e.g. `train=False`); initialization uses `eval_kwargs`.
  """
  train_kwargs = train_kwargs or {}
  eval_kwargs = eval_kwargs or {}

  def init_by_shape(rng):
    if stateful:
      with nn.stateful() as state:
        _, params = module.init_by_shape(rng, [input_spec], **eval_kwargs)
      return params, collection_to_stats(state)
    _, params = module.init_by_shape(rng, [input_spec], **eval_kwargs)
    return params, {}

  def init(rng, batch):
    if stateful:
      with nn.stateful() as state:
        _, params = module.init(rng, batch['x'], **eval_kwargs)
      return params, collection_to_stats(state)
    _, params = module.init(rng, batch['x'], **eval_kwargs)
    return params, {}

  def make_state(params, stats):
    optimizer = optimizer_def.create(nn.Model(module, params))
    return optimizer, (stats_to_collection(stats) if stateful else None)

  def forward(model, stats, x, kwargs):
    if not stateful:
      return model(x, **kwargs), None
    with nn.stateful(stats) as new_stats:
      y = model(x, **kwargs)
    return y, new_stats

  def train_step(state, batch):
    optimizer, stats = state

    def loss_fn(model):
      logits, new_stats = forward(model, stats, batch['x'], train_kwargs)
      return cross_entropy(logits, batch['y']), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        optimizer.target)
    optimizer = optimizer.apply_gradient(grads)
    return (optimizer, new_stats), loss

  def eval_step(state, batch):
    optimizer, stats = state
    if stateful:
      with nn.stateful(stats, mutable=False):
        logits = optimizer.target(batch['x'], **eval_kwargs)
    else:
      logits = optimizer.target(batch['x'], **eval_kwargs)
    return {'loss': cross_entropy(logits, batch['y']),
            'accuracy': accuracy(logits, batch['y'])}

  def loss(params, stats, batch):
    logits, new_stats = forward(nn.Model(module, params),
                                stats_to_collection(stats), batch['x'],
                                train_kwargs)
    return cross_entropy(logits, batch['y']), collection_to_stats(new_stats)

  return Impl('flaxish', init_by_shape, init, make_state, train_step,
              eval_step, loss, lambda state: state[0].target.params,
              lambda state: collection_to_stats(state[1]))

