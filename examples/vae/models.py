"""A convolutional VAE for 28x28x1 images, in the 2020 `flax.nn` style.

`VAE(x, latents)` encodes, draws `z = mean + exp(logvar / 2) * eps` with `eps`
from `nn.make_rng()` (so it must run under `nn.stochastic(rng)`), and decodes;
`VAE.generate(z)` decodes latent codes into pixel probabilities.
"""
import jax
import jax.numpy as jnp

from flaxish import nn

__all__ = ['Encoder', 'Decoder', 'VAE', 'reparameterize']


class Encoder(nn.Module):
  """[batch, 28, 28, 1] -> (mean, logvar), each [batch, latents]."""

  def apply(self, x, latents):
    x = nn.relu(nn.Conv(x, features=32, kernel_size=(3, 3), strides=(2, 2)))
    x = nn.relu(nn.Conv(x, features=64, kernel_size=(3, 3), strides=(2, 2)))
    x = x.reshape((x.shape[0], -1))  # [batch, 7 * 7 * 64]
    x = nn.relu(nn.Dense(x, features=256))
    mean = nn.Dense(x, features=latents, name='mean')
    logvar = nn.Dense(x, features=latents, name='logvar')
    return mean, logvar


class Decoder(nn.Module):
  """[batch, latents] -> Bernoulli logits [batch, 28, 28, 1]."""

  def apply(self, z):
    z = nn.relu(nn.Dense(z, features=256))
    z = nn.relu(nn.Dense(z, features=7 * 7 * 32))
    z = z.reshape((z.shape[0], 7, 7, 32))
    z = nn.relu(nn.ConvTranspose(z, features=32, kernel_size=(3, 3),
                                 strides=(2, 2)))  # 14x14
    return nn.ConvTranspose(z, features=1, kernel_size=(3, 3),
                            strides=(2, 2))  # 28x28


def reparameterize(rng, mean, logvar):
  """A sample of N(mean, exp(logvar)) that is differentiable in both."""
  eps = jax.random.normal(rng, logvar.shape)
  return mean + jnp.exp(0.5 * logvar) * eps


class VAE(nn.Module):
  """Returns (logits [batch, 28, 28, 1], mean, logvar [batch, latents])."""

  def apply(self, x, latents=20):
    mean, logvar = Encoder(x, latents, name='encoder')
    z = reparameterize(nn.make_rng(), mean, logvar)
    logits = self._decoder()(z)
    return logits, mean, logvar

  @nn.module_method
  def generate(self, z, **unused_kwargs):
    """Pixel probabilities [batch, 28, 28, 1] for latent codes z."""
    return nn.sigmoid(self._decoder()(z))

  def _decoder(self):
    return Decoder.shared(name='decoder')
