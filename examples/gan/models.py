"""A small class-conditional DCGAN for 28x28x1 images in [-1, 1].

The generator upsamples with strided `ConvTranspose`s and `BatchNorm` (its
running statistics live in an `nn.stateful()` collection); the
discriminator sees the class as 10 one-hot input planes and uses strided
`Conv`s with leaky ReLUs, without normalization.
"""
import jax
import jax.numpy as jnp

from flaxish import nn

__all__ = ['Generator', 'Discriminator', 'NUM_CLASSES']

NUM_CLASSES = 10


class Generator(nn.Module):
  """(z [batch, latents], labels int [batch]) -> images [batch, 28, 28, 1]
  in [-1, 1]. `train=False` normalizes with the running statistics."""

  def apply(self, z, labels, train=True):
    batch_norm = nn.BatchNorm.partial(use_running_average=not train,
                                      momentum=0.9)
    x = jnp.concatenate([z, jax.nn.one_hot(labels, NUM_CLASSES)], -1)
    x = nn.relu(batch_norm(nn.Dense(x, features=7 * 7 * 64)))
    x = x.reshape((x.shape[0], 7, 7, 64))
    x = nn.ConvTranspose(x, features=32, kernel_size=(3, 3), strides=(2, 2))
    x = nn.relu(batch_norm(x))  # 14x14
    x = nn.ConvTranspose(x, features=1, kernel_size=(3, 3), strides=(2, 2))
    return jnp.tanh(x)  # 28x28


class Discriminator(nn.Module):
  """(images [batch, 28, 28, 1], labels int [batch]) -> logits [batch] of
  "real" (a real digit of that class)."""

  def apply(self, x, labels):
    planes = jax.nn.one_hot(labels, NUM_CLASSES)[:, None, None, :]
    x = jnp.concatenate([x, jnp.broadcast_to(
        planes, x.shape[:3] + (NUM_CLASSES,))], -1)
    x = nn.leaky_relu(nn.Conv(x, features=32, kernel_size=(3, 3),
                              strides=(2, 2)), 0.2)  # 14x14
    x = nn.leaky_relu(nn.Conv(x, features=64, kernel_size=(3, 3),
                              strides=(2, 2)), 0.2)  # 7x7
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(x, features=1)[:, 0]
