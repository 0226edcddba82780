"""Tests for flaxish.training.lr_schedule against NumPy formulas."""
import jax
import numpy as np

from flaxish.training import lr_schedule

STEPS = np.arange(0, 400, 7)


def _warmup(step, warmup_epochs, steps_per_epoch):
  if warmup_epochs == 0:
    return 1.
  return min(1., step / (warmup_epochs * steps_per_epoch))


def test_constant_with_warmup():
  fn = lr_schedule.create_constant_learning_rate_schedule(0.1, 50,
                                                          warmup_length=2)
  for s in STEPS:
    np.testing.assert_allclose(fn(s), 0.1 * _warmup(s, 2, 50), rtol=1e-6)
  fn = lr_schedule.create_constant_learning_rate_schedule(0.1, 50)
  np.testing.assert_allclose(fn(0), 0.1)


def test_stepped():
  fn = lr_schedule.create_stepped_learning_rate_schedule(
      1.0, 20, [[3, 0.1], [6, 0.01]], warmup_length=1)
  for s in STEPS:
    factor = 1. if s <= 60 else (0.1 if s <= 120 else 0.01)
    np.testing.assert_allclose(fn(s), factor * _warmup(s, 1, 20), rtol=1e-6)


def test_cosine():
  fn = lr_schedule.create_cosine_learning_rate_schedule(0.5, 10, 30,
                                                        warmup_length=0.5)
  for s in STEPS[STEPS <= 300]:
    expected = 0.5 * (np.cos(np.pi * s / 300) + 1) / 2 * _warmup(s, 0.5, 10)
    np.testing.assert_allclose(fn(s), expected, rtol=1e-5, atol=1e-7)


def test_schedules_work_under_jit():
  fn = lr_schedule.create_stepped_learning_rate_schedule(0.1, 10, [[1, 0.5]])
  values = jax.jit(jax.vmap(fn))(np.array([5, 10, 11]))
  np.testing.assert_allclose(values, [0.1, 0.1, 0.05], rtol=1e-6)
