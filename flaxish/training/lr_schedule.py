"""Learning-rate schedules as plain `step -> lr` functions.

Each factory returns `learning_rate_fn(step)` (step may be a traced int).
`warmup_length` is in epochs: the rate is multiplied by
`min(1, step / (warmup_length * steps_per_epoch))`, a linear ramp from 0.
"""
from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ['create_constant_learning_rate_schedule',
           'create_stepped_learning_rate_schedule',
           'create_cosine_learning_rate_schedule']


def _warmup(lr, step, warmup_length, steps_per_epoch):
  if warmup_length > 0.:
    lr = lr * jnp.minimum(1., step / float(warmup_length) / steps_per_epoch)
  return lr


def create_constant_learning_rate_schedule(base_learning_rate: float,
                                           steps_per_epoch: int,
                                           warmup_length: float = 0.0):
  """`base_learning_rate` after an optional linear warmup."""
  def learning_rate_fn(step):
    lr = jnp.asarray(base_learning_rate, jnp.float32)
    return _warmup(lr, step, warmup_length, steps_per_epoch)
  return learning_rate_fn


def create_stepped_learning_rate_schedule(base_learning_rate: float,
                                          steps_per_epoch: int,
                                          lr_sched_steps: Sequence[
                                              Sequence[float]],
                                          warmup_length: float = 0.0):
  """A piecewise-constant schedule.

  Arguments:
    base_learning_rate: the rate before the first boundary.
    steps_per_epoch: steps per epoch.
    lr_sched_steps: `[[epoch, factor], ...]` with increasing epochs; after
      `epoch` epochs the rate is `base_learning_rate * factor` (factors are
      not cumulative), e.g. `[[30, 0.1], [60, 0.01]]`.
    warmup_length: linear warmup in epochs (default 0).
  """
  boundaries = np.round(np.array([s[0] for s in lr_sched_steps], np.float64) *
                        steps_per_epoch).astype(np.int32)
  values = np.array([1.0] + [s[1] for s in lr_sched_steps],
                    np.float32) * base_learning_rate

  def learning_rate_fn(step):
    index = jnp.sum(jnp.asarray(boundaries) < step)
    lr = jnp.take(jnp.asarray(values), index)
    return _warmup(lr, step, warmup_length, steps_per_epoch)
  return learning_rate_fn


def create_cosine_learning_rate_schedule(base_learning_rate: float,
                                         steps_per_epoch: int,
                                         halfcos_epochs: float,
                                         warmup_length: float = 0.0):
  """Half a cosine from `base_learning_rate` down to 0 over `halfcos_epochs`.

  `lr = base * (cos(pi * step / (halfcos_epochs * steps_per_epoch)) + 1) / 2`
  (as in 2020, the curve rises again after `halfcos_epochs`).
  """
  halfwavelength_steps = halfcos_epochs * steps_per_epoch

  def learning_rate_fn(step):
    scale = jnp.cos(step * jnp.pi / halfwavelength_steps) * 0.5 + 0.5
    lr = base_learning_rate * scale
    return _warmup(lr, step, warmup_length, steps_per_epoch)
  return learning_rate_fn
