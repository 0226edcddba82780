"""Tests of flaxish.nn.initializers: the 2020 names from jax.nn.initializers."""
import jax
import numpy as np
import pytest

from flaxish import nn
from flaxish.nn import initializers

NAMES_2020 = ['kaiming_normal', 'kaiming_uniform', 'lecun_normal',
              'lecun_uniform', 'normal', 'ones', 'orthogonal', 'uniform',
              'variance_scaling', 'xavier_normal', 'xavier_uniform', 'zeros',
              'delta_orthogonal']


@pytest.mark.parametrize('name', NAMES_2020)
def test_2020_names(name):
  assert getattr(initializers, name) is getattr(jax.nn.initializers, name)
  assert name in initializers.__all__


def test_called_as_init_key_shape():
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(initializers.zeros(key, (2, 3)), 0.)
  np.testing.assert_array_equal(initializers.ones(key, (2,)), 1.)
  w = initializers.orthogonal()(key, (4, 4))
  np.testing.assert_allclose(np.asarray(w) @ np.asarray(w).T, np.eye(4),
                             atol=1e-5)
  assert nn.initializers is initializers
