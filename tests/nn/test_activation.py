"""Tests of flaxish.nn.activation: the 2020 names, re-exported from jax.nn."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from flaxish.nn import activation

NAMES_2020 = ['celu', 'elu', 'gelu', 'glu', 'leaky_relu', 'log_sigmoid',
              'log_softmax', 'relu', 'sigmoid', 'soft_sign', 'softmax',
              'softplus', 'swish', 'tanh', 'selu', 'hard_tanh', 'relu6',
              'hard_sigmoid', 'hard_swish']


@pytest.mark.parametrize('name', NAMES_2020)
def test_2020_names_are_exported_from_nn_and_nn_activation(name):
  assert getattr(nn, name) is getattr(activation, name)
  assert name in nn.__all__ and name in activation.__all__


def test_values_against_numpy():
  x = np.linspace(-3, 3, 13).astype(np.float32)
  np.testing.assert_allclose(nn.relu(x), np.maximum(x, 0))
  np.testing.assert_allclose(nn.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-6)
  np.testing.assert_allclose(nn.swish(x), x / (1 + np.exp(-x)), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(nn.softplus(x), np.log1p(np.exp(x)), rtol=1e-5)
  np.testing.assert_allclose(nn.soft_sign(x), x / (1 + np.abs(x)), rtol=1e-6)
  np.testing.assert_allclose(nn.leaky_relu(x), np.where(x > 0, x, 0.01 * x),
                             rtol=1e-6)
  np.testing.assert_allclose(nn.elu(x), np.where(x > 0, x, np.expm1(x)),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(nn.relu6(x * 3), np.clip(x * 3, 0, 6))
  np.testing.assert_allclose(nn.tanh(x), np.tanh(x), rtol=1e-6)
  e = np.exp(x - x.max())
  np.testing.assert_allclose(nn.softmax(x), e / e.sum(), rtol=1e-5)
  np.testing.assert_allclose(nn.log_softmax(x), np.log(e / e.sum()),
                             rtol=1e-5, atol=1e-6)
  a, b = np.split(x[:12], 2)
  np.testing.assert_allclose(nn.glu(x[:12]), a / (1 + np.exp(-b)),
                             rtol=1e-5, atol=1e-7)


def test_normalize_is_standardize():
  x = np.array([[1., 2., 6.], [0., 0., 3.]], np.float32)
  expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(
      x.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(activation.normalize(x), expected, rtol=1e-5)
  assert activation.normalize is jax.nn.standardize
  assert nn.tanh is jnp.tanh
