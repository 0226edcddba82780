"""ResNet v1 (He et al., 2015, arxiv.org/abs/1512.03385) for ImageNet.

ResNet-18 and -34 stack basic blocks (two 3x3 convolutions); ResNet-50 and
deeper stack bottleneck blocks (1x1, 3x3, 1x1 with 4x wider output). The
stride of a downsampling bottleneck is on its 3x3 convolution (often called
"v1.5"). Convolutions have no bias; every one is followed by BatchNorm
(momentum 0.9, epsilon 1e-5) whose running statistics live in the
`nn.stateful()` Collection. The last BatchNorm of each block starts with a
zero scale, so every block starts as the identity.

Input: `[batch, height, width, 3]` (any size; 224x224 on ImageNet). Output:
log-probabilities `[batch, num_classes]` in float32, whatever `dtype` is.
"""
from typing import Any, Optional

import jax.numpy as jnp

from flaxish import nn


class BasicBlock(nn.Module):
  """conv3x3-bn-relu-conv3x3-bn, plus the shortcut, then relu."""

  def apply(self, x, filters, strides, conv, norm):
    shortcut = x
    y = conv(x, filters, (3, 3), strides, name='conv1')
    y = nn.relu(norm(y, name='bn1'))
    y = conv(y, filters, (3, 3), name='conv2')
    y = norm(y, scale_init=nn.initializers.zeros, name='bn2')
    if shortcut.shape != y.shape:
      shortcut = conv(x, filters, (1, 1), strides, name='proj_conv')
      shortcut = norm(shortcut, name='proj_bn')
    return nn.relu(shortcut + y)


class BottleneckBlock(nn.Module):
  """conv1x1-bn-relu-conv3x3-bn-relu-conv1x1(4x)-bn, shortcut, relu."""

  def apply(self, x, filters, strides, conv, norm):
    shortcut = x
    y = conv(x, filters, (1, 1), name='conv1')
    y = nn.relu(norm(y, name='bn1'))
    y = conv(y, filters, (3, 3), strides, name='conv2')
    y = nn.relu(norm(y, name='bn2'))
    y = conv(y, filters * 4, (1, 1), name='conv3')
    y = norm(y, scale_init=nn.initializers.zeros, name='bn3')
    if shortcut.shape != y.shape:
      shortcut = conv(x, filters * 4, (1, 1), strides, name='proj_conv')
      shortcut = norm(shortcut, name='proj_bn')
    return nn.relu(shortcut + y)


class ResNet(nn.Module):
  """ResNet v1: 7x7/2 stem, 3x3/2 max-pool, four stages, mean-pool, Dense.

  Parameters are stored in float32; `dtype` is the compute dtype (bfloat16
  or float16 for mixed precision).
  """

  def apply(self, x, num_classes: int, stage_sizes=(2, 2, 2, 2),
            block=BasicBlock, num_filters: int = 64, train: bool = True,
            dtype: Any = jnp.float32, axis_name: Optional[str] = None):
    """Arguments:
      x: images `[batch, height, width, channels]`.
      num_classes: the number of output classes.
      stage_sizes: the number of blocks in each stage (four stages in the
        standard ResNets).
      block: `BasicBlock` or `BottleneckBlock`.
      num_filters: the width of the first stage (doubles at every stage).
      train: use batch statistics and update the running averages (True),
        or normalize with the running averages (False, evaluation).
      dtype: the compute dtype.
      axis_name: a pmap axis to compute BatchNorm batch statistics over
        (cross-replica BatchNorm); None normalizes each device's batch
        with its own statistics, as the 2020 example did.
    """
    conv = nn.Conv.partial(bias=False, dtype=dtype)
    norm = nn.BatchNorm.partial(use_running_average=not train, momentum=0.9,
                                epsilon=1e-5, dtype=dtype,
                                axis_name=axis_name if train else None)
    x = conv(x, num_filters, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
             name='stem_conv')
    x = nn.relu(norm(x, name='stem_bn'))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for stage, num_blocks in enumerate(stage_sizes):
      for i in range(num_blocks):
        strides = (2, 2) if stage > 0 and i == 0 else (1, 1)
        x = block(x, num_filters * 2**stage, strides, conv, norm,
                  name=f'stage{stage + 1}_block{i + 1}')
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(x, num_classes, dtype=dtype, name='head')
    return nn.log_softmax(jnp.asarray(x, jnp.float32))


ResNet18 = ResNet.partial(stage_sizes=(2, 2, 2, 2), block=BasicBlock)
ResNet34 = ResNet.partial(stage_sizes=(3, 4, 6, 3), block=BasicBlock)
ResNet50 = ResNet.partial(stage_sizes=(3, 4, 6, 3), block=BottleneckBlock)
ResNet101 = ResNet.partial(stage_sizes=(3, 4, 23, 3), block=BottleneckBlock)
ResNet152 = ResNet.partial(stage_sizes=(3, 8, 36, 3), block=BottleneckBlock)
ResNet200 = ResNet.partial(stage_sizes=(3, 24, 36, 3), block=BottleneckBlock)

MODELS = {'ResNet18': ResNet18, 'ResNet34': ResNet34, 'ResNet50': ResNet50,
          'ResNet101': ResNet101, 'ResNet152': ResNet152,
          'ResNet200': ResNet200}
