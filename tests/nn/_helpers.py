"""Tiny modules shared by the Module-system tests (independent of nn.linear)."""
import jax
import jax.numpy as jnp

from flaxish import nn


class Affine(nn.Module):
  """y = x @ kernel + bias, written with plain jnp."""

  def apply(self, x, features=3):
    kernel = self.param('kernel', (x.shape[-1], features),
                        jax.nn.initializers.lecun_normal())
    bias = self.param('bias', (features,), jax.nn.initializers.normal(1.0))
    return x @ kernel + bias


class MLP(nn.Module):

  def apply(self, x, hidden=4, out=2):
    x = jnp.tanh(Affine(x, features=hidden))
    return Affine(x, features=out)


class Counter(nn.Module):
  """Counts calls in a state variable 'count' (not while initializing)."""

  def apply(self, x):
    count = self.state('count', (), jax.nn.initializers.zeros)
    if not self.is_initializing():
      count.value = count.value + 1
    return x
