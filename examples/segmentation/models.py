"""A small U-Net for semantic segmentation, in the 2020 `flax.nn` style.

Three 2x2 max-pool downsamplings (64 -> 8 pixels for 64x64 inputs), one
3x3 Conv-BatchNorm-ReLU block per level, and ConvTranspose upsamplings whose
outputs are concatenated with the encoder's features of the same size.
BatchNorm statistics live in an `nn.stateful()` collection.
"""
import jax.numpy as jnp

from flaxish import nn

__all__ = ['ConvBlock', 'UNet']


class ConvBlock(nn.Module):
  """3x3 Conv (no bias), BatchNorm, ReLU: [b, h, w, c] -> [b, h, w,
  features]."""

  def apply(self, x, features, train=True):
    x = nn.Conv(x, features=features, kernel_size=(3, 3), bias=False)
    x = nn.BatchNorm(x, use_running_average=not train, momentum=0.9)
    return nn.relu(x)


class UNet(nn.Module):
  """[batch, h, w, channels] (h, w multiples of 8) -> logits
  [batch, h, w, num_classes]. `features` is the width of the first level;
  each level below doubles it."""

  def apply(self, x, num_classes, features=8, train=True):
    skips = []
    for level in range(3):
      x = ConvBlock(x, features * 2 ** level, train=train)
      skips.append(x)
      x = nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = ConvBlock(x, features * 8, train=train)  # the bottleneck
    for level in reversed(range(3)):
      x = nn.ConvTranspose(x, features=features * 2 ** level,
                           kernel_size=(2, 2), strides=(2, 2))
      x = ConvBlock(jnp.concatenate([x, skips[level]], -1),
                    features * 2 ** level, train=train)
    return nn.Conv(x, features=num_classes, kernel_size=(1, 1))
