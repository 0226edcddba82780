"""The plain-JAX side of a workload: hand-written init/apply functions and a
hand-written update rule (see `plain.py`), no library."""
import functools

import jax

from benchmarks.workloads import plain
from benchmarks.workloads.base import Impl, accuracy, cross_entropy

__all__ = ['make_impl', 'momentum', 'adam']


def momentum(lr, beta=0.9):
  """`(init, update)` of Momentum SGD."""
  return plain.momentum_init, functools.partial(plain.momentum_update, lr=lr,
                                                beta=beta)


def adam(lr, b1=0.9, b2=0.999, eps=1e-8):
  """`(init, update)` of Adam."""
  return plain.adam_init, functools.partial(plain.adam_update, lr=lr, b1=b1,
                                            b2=b2, eps=eps)


def make_impl(init_fn, apply_fn, rule) -> Impl:
  """An `Impl` from hand-written functions.

  Arguments:
    init_fn: `rng -> (params, stats)`, drawing every parameter directly.
    apply_fn: `(params, stats, x, train) -> (logits, new_stats)`.
    rule: `(opt_init, opt_update)`, e.g. `momentum(0.1)`.
  """
  opt_init, opt_update = rule

  def make_state(params, stats):
    return params, opt_init(params), stats

  def train_step(state, batch):
    params, opt_state, stats = state

    def loss_fn(p):
      logits, new_stats = apply_fn(p, stats, batch['x'], True)
      return cross_entropy(logits, batch['y']), new_stats

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params)
    params, opt_state = opt_update(params, opt_state, grads)
    return (params, opt_state, new_stats), loss

  def eval_step(state, batch):
    params, _, stats = state
    logits, _ = apply_fn(params, stats, batch['x'], False)
    return {'loss': cross_entropy(logits, batch['y']),
            'accuracy': accuracy(logits, batch['y'])}

  def loss(params, stats, batch):
    logits, new_stats = apply_fn(params, stats, batch['x'], True)
    return cross_entropy(logits, batch['y']), new_stats

  return Impl('plain_jax', init_fn, lambda rng, batch: init_fn(rng),
              make_state, train_step, eval_step, loss, lambda s: s[0],
              lambda s: s[2])
