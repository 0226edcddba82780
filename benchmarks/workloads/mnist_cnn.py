"""MNIST CNN, the 2020 Flax example's model, trained with Momentum SGD.

Conv32-relu-avgpool-Conv64-relu-avgpool-Dense256-relu-Dense10 on
`[batch, 28, 28, 1]` images; parameters `Conv_0, Conv_1, Dense_2, Dense_3`
(the 2020 names: one counter per module).
"""
import jax
import jax.numpy as jnp

from flaxish import nn
from flaxish import optim
from benchmarks.workloads import flaxish_impl, plain, plain_impl
from benchmarks.workloads.base import Workload, have_flax

PRESETS = {'tiny': dict(batch=4), 'cpu': dict(batch=128),
           'gpu': dict(batch=128)}
LEARNING_RATE, BETA = 0.02, 0.9


class CNN(nn.Module):
  """The 2020 MNIST CNN; returns logits."""

  def apply(self, x):
    x = nn.relu(nn.Conv(x, features=32, kernel_size=(3, 3)))
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(x, features=64, kernel_size=(3, 3)))
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(x, features=256))
    return nn.Dense(x, features=10)


def plain_init(rng):
  k = jax.random.split(rng, 4)
  return {'Conv_0': plain.conv_init(k[0], (3, 3), 1, 32),
          'Conv_1': plain.conv_init(k[1], (3, 3), 32, 64),
          'Dense_2': plain.dense_init(k[2], 7 * 7 * 64, 256),
          'Dense_3': plain.dense_init(k[3], 256, 10)}, {}


def plain_apply(params, stats, x, train):
  del train
  x = jax.nn.relu(plain.conv(params['Conv_0'], x))
  x = plain.avg_pool(x, (2, 2), (2, 2))
  x = jax.nn.relu(plain.conv(params['Conv_1'], x))
  x = plain.avg_pool(x, (2, 2), (2, 2))
  x = x.reshape((x.shape[0], -1))
  x = jax.nn.relu(plain.dense(params['Dense_2'], x))
  return plain.dense(params['Dense_3'], x), stats


def linen_impl(batch):
  import flax.linen as ln  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from benchmarks.workloads import linen_impl as impl

  class LinenCNN(ln.Module):

    @ln.compact
    def __call__(self, x):
      x = ln.relu(ln.Conv(32, (3, 3), name='Conv_0')(x))
      x = ln.avg_pool(x, (2, 2), strides=(2, 2))
      x = ln.relu(ln.Conv(64, (3, 3), name='Conv_1')(x))
      x = ln.avg_pool(x, (2, 2), strides=(2, 2))
      x = x.reshape((x.shape[0], -1))
      x = ln.relu(ln.Dense(256, name='Dense_2')(x))
      return ln.Dense(10, name='Dense_3')(x)

  return impl.make_impl(LinenCNN(), ((batch, 28, 28, 1), jnp.float32),
                        optax.sgd(LEARNING_RATE, momentum=BETA))


def make(batch=128) -> Workload:
  """The workload at batch size `batch`."""
  spec = ((batch, 28, 28, 1), jnp.float32)

  def make_batch(rng):
    kx, ky = jax.random.split(rng)
    return {'x': jax.random.normal(kx, spec[0]),
            'y': jax.random.randint(ky, (batch,), 0, 10)}

  impls = {
      'flaxish': lambda: flaxish_impl.make_impl(
          CNN, spec, optim.Momentum(LEARNING_RATE, beta=BETA)),
      'plain_jax': lambda: plain_impl.make_impl(
          plain_init, plain_apply, plain_impl.momentum(LEARNING_RATE, BETA)),
  }
  if have_flax():
    impls['linen'] = lambda: linen_impl(batch)
  return Workload('mnist_cnn', f'MNIST CNN, batch {batch}, Momentum SGD',
                  {'batch': batch}, make_batch, impls, batch, 'images')
