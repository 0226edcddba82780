"""A small class-conditional DCGAN for 28x28x1 images in [-1, 1].

The generator upsamples with strided `ConvTranspose`s and `BatchNorm` (its
running statistics live in an `nn.stateful()` collection); the
discriminator sees the class as 10 one-hot input planes and as a projection
of its last hidden layer onto a class embedding; it uses strided `Conv`s with
leaky ReLUs, without normalization. The generator also gets the one-hot
class as input and as planes of its 7x7 feature map.
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
    x = _with_label_planes(x, labels)
    x = nn.ConvTranspose(x, features=32, kernel_size=(3, 3), strides=(2, 2))
    x = nn.relu(batch_norm(x))  # 14x14
    x = nn.ConvTranspose(x, features=1, kernel_size=(3, 3), strides=(2, 2))
    return jnp.tanh(x)  # 28x28


class Discriminator(nn.Module):
  """(images [batch, 28, 28, 1], labels int [batch]) -> logits [batch] of
  "real" (a real digit of that class)."""

  def apply(self, x, labels):
    x = _with_label_planes(x, labels)
    x = nn.leaky_relu(nn.Conv(x, features=32, kernel_size=(3, 3),
                              strides=(2, 2)), 0.2)  # 14x14
    x = nn.leaky_relu(nn.Conv(x, features=64, kernel_size=(3, 3),
                              strides=(2, 2)), 0.2)  # 7x7
    x = x.reshape((x.shape[0], -1))
    h = nn.leaky_relu(nn.Dense(x, features=128), 0.2)
    # Projection (Miyato & Koyama, 2018): a class embedding dotted with h.
    projection = jnp.sum(h * nn.Embed(labels, NUM_CLASSES, 128), -1)
    return nn.Dense(h, features=1)[:, 0] + projection


def _with_label_planes(x, labels):
  """Appends the one-hot class as NUM_CLASSES constant channels to x."""
  planes = jax.nn.one_hot(labels, NUM_CLASSES, dtype=x.dtype)
  planes = jnp.broadcast_to(planes[:, None, None, :],
                            x.shape[:3] + (NUM_CLASSES,))
  return jnp.concatenate([x, planes], -1)
