"""What a workload is: a model, a synthetic batch and one `Impl` per library.

Every implementation of a workload (flaxish, plain JAX, Flax Linen) speaks the
same *canonical* layouts, so the harness can feed all of them the same
parameters and compare their losses before it times anything:

- `params`: the flaxish parameter tree (nested dicts, module names as keys);
- `stats`: BatchNorm running statistics as nested dicts that mirror the
  module paths, e.g. `{'stem_bn': {'mean': .., 'var': ..}}` (`{}` if none).

Each `Impl` converts from these layouts to its own train state (optimizer
state included) in `make_state`; its `train_step` and `eval_step` are pure
functions that the harness jits (the train step with the state donated).
"""
import dataclasses
import importlib
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp

__all__ = ['Impl', 'Workload', 'cross_entropy', 'accuracy']

IMPL_NAMES = ('flaxish', 'plain_jax', 'linen')


@dataclasses.dataclass(frozen=True)
class Impl:
  """One implementation of a workload.

  Attributes:
    name: 'flaxish', 'plain_jax' or 'linen'.
    init_by_shape: `rng -> (params, stats)` from input shapes only (Linen has
      no such call: its entry runs `init` on `jnp.ones` of the input shape).
    init: `(rng, batch) -> (params, stats)` on the real inputs.
    make_state: `(params, stats) -> state`, the train state (a pytree) with a
      fresh optimizer state; params and stats are in canonical layout.
    train_step: `(state, batch) -> (state, loss)`.
    eval_step: `(state, batch) -> {'loss': .., 'accuracy': ..}`.
    loss: `(params, stats, batch) -> (loss, new_stats)` in training mode, in
      canonical layouts (for the equivalence checks).
    params_of: `state -> params` in canonical layout.
    stats_of: `state -> stats` in canonical layout.
  """
  name: str
  init_by_shape: Callable[..., Any]
  init: Callable[..., Any]
  make_state: Callable[..., Any]
  train_step: Callable[..., Any]
  eval_step: Callable[..., Any]
  loss: Callable[..., Any]
  params_of: Callable[[Any], Any]
  stats_of: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model at one size, with its batch and implementations.

  Attributes:
    name: short name, e.g. 'resnet18'.
    title: one line for the report, sizes included.
    config: the hyper-parameters (also written to the JSON file).
    make_batch: `rng -> batch`, a dict of arrays (synthetic data).
    impls: implementation name -> zero-argument factory of its `Impl`
      ('linen' only when flax is installed).
    items_per_step: examples (images) or tokens per train step.
    unit: 'images' or 'tokens'.
    flops_per_step: analytic FLOPs of one train step, when computed.
    tolerance: relative tolerances of the equivalence check that differ
      from the harness defaults ('loss', 'update', 'stats').
  """
  name: str
  title: str
  config: Dict[str, Any]
  make_batch: Callable[[Any], Dict[str, Any]]
  impls: Dict[str, Callable[[], Impl]]
  items_per_step: int
  unit: str
  flops_per_step: Optional[float] = None
  tolerance: Optional[Dict[str, float]] = None


def cross_entropy(logits, labels):
  """Mean cross-entropy of integer `labels` under `logits` (any batch axes).

  Shared by every implementation, so that only model and update code differ.
  """
  logp = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
  picked = jnp.take_along_axis(logp, labels[..., None], axis=-1)
  return -jnp.mean(picked)


def accuracy(logits, labels):
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def have_flax() -> bool:
  """True if flax.linen and optax can be imported."""
  try:
    importlib.import_module('flax.linen')
    importlib.import_module('optax')
  except ImportError:
    return False
  return True
