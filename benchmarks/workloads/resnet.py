"""ResNet v1 with BatchNorm: ResNet-18 for CIFAR, ResNet-50 for ImageNet.

`resnet18`: 3x3 stem, no max-pool, basic blocks (2, 2, 2, 2), 10 classes, on
32x32 images. `resnet50`: 7x7/2 stem, 3x3/2 max-pool, bottleneck blocks
(3, 4, 6, 3) with the stride on the 3x3 convolution, 1000 classes (224x224 on
ImageNet; smaller on CPU). Convolutions have no bias; BatchNorm has momentum
0.9 and epsilon 1e-5, running statistics in `nn.stateful()` (flaxish), the
`batch_stats` collection (Linen), or an explicit dict (plain JAX); the last
BatchNorm of each block starts with a zero scale. Momentum SGD.
"""
import jax
import jax.numpy as jnp

from flaxish import nn
from flaxish import optim
from benchmarks.workloads import flaxish_impl, plain, plain_impl
from benchmarks.workloads.base import Workload, have_flax

ARCHS = {
    'resnet18': dict(stages=(2, 2, 2, 2), bottleneck=False, cifar_stem=True,
                     num_classes=10),
    'resnet50': dict(stages=(3, 4, 6, 3), bottleneck=True, cifar_stem=False,
                     num_classes=1000),
}
PRESETS = {
    'resnet18': {'tiny': dict(batch=2, size=8, width=8),
                 'cpu': dict(batch=32, size=32, width=16),
                 'gpu': dict(batch=128, size=32, width=64)},
    'resnet50': {'tiny': dict(batch=2, size=32, width=8),
                 'cpu': dict(batch=4, size=64, width=16),
                 'gpu': dict(batch=64, size=224, width=64)},
}
LEARNING_RATE, BETA, BN_MOMENTUM, BN_EPSILON = 0.05, 0.9, 0.9, 1e-5


def _layout(stages, bottleneck, width):
  """Yields `(name, filters, strides)` for every block."""
  for s, n in enumerate(stages):
    for i in range(n):
      strides = (2, 2) if s > 0 and i == 0 else (1, 1)
      yield f'stage{s + 1}_block{i + 1}', width * 2**s, strides


# ------------------------------------------------------------------ flaxish --

class Block(nn.Module):
  """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) residual block."""

  def apply(self, x, filters, strides, bottleneck, train):
    conv = nn.Conv.partial(bias=False)
    norm = nn.BatchNorm.partial(use_running_average=not train,
                                momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    if bottleneck:
      y = nn.relu(norm(conv(x, filters, (1, 1), name='conv1'), name='bn1'))
      y = nn.relu(norm(conv(y, filters, (3, 3), strides, name='conv2'),
                       name='bn2'))
      y = conv(y, filters * 4, (1, 1), name='conv3')
      y = norm(y, scale_init=nn.initializers.zeros, name='bn3')
    else:
      y = nn.relu(norm(conv(x, filters, (3, 3), strides, name='conv1'),
                       name='bn1'))
      y = conv(y, filters, (3, 3), name='conv2')
      y = norm(y, scale_init=nn.initializers.zeros, name='bn2')
    if x.shape != y.shape:
      x = norm(conv(x, y.shape[-1], (1, 1), strides, name='proj_conv'),
               name='proj_bn')
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet v1; returns logits."""

  def apply(self, x, stages, bottleneck, cifar_stem, num_classes, width,
            train=True):
    conv = nn.Conv.partial(bias=False)
    norm = nn.BatchNorm.partial(use_running_average=not train,
                                momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    if cifar_stem:
      x = conv(x, width, (3, 3), name='stem_conv')
    else:
      x = conv(x, width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
               name='stem_conv')
    x = nn.relu(norm(x, name='stem_bn'))
    if not cifar_stem:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for name, filters, strides in _layout(stages, bottleneck, width):
      x = Block(x, filters, strides, bottleneck, train, name=name)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(x, num_classes, name='head')


# ---------------------------------------------------------------- plain JAX --

def _bn_state(features):
  return {'mean': jnp.zeros((features,)), 'var': jnp.ones((features,))}


def plain_init(rng, stages, bottleneck, cifar_stem, num_classes, width):
  """`(params, stats)` of the same shapes and distributions as `ResNet`."""
  keys = iter(jax.random.split(rng, 128))
  conv = lambda ks, c_in, c_out: plain.conv_init(next(keys), ks, c_in, c_out,
                                                 bias=False)
  ks = (3, 3) if cifar_stem else (7, 7)
  params = {'stem_conv': conv(ks, 3, width), 'stem_bn': plain.norm_init(width)}
  stats = {'stem_bn': _bn_state(width)}
  c_in = width
  for name, filters, strides in _layout(stages, bottleneck, width):
    p, s = {}, {}
    if bottleneck:
      shapes = [((1, 1), c_in, filters), ((3, 3), filters, filters),
                ((1, 1), filters, 4 * filters)]
    else:
      shapes = [((3, 3), c_in, filters), ((3, 3), filters, filters)]
    for j, (k, a, b) in enumerate(shapes):
      last = j == len(shapes) - 1
      p[f'conv{j + 1}'] = conv(k, a, b)
      p[f'bn{j + 1}'] = plain.norm_init(b, 0. if last else 1.)
      s[f'bn{j + 1}'] = _bn_state(b)
    c_out = shapes[-1][2]
    if c_in != c_out or strides != (1, 1):
      p['proj_conv'] = conv((1, 1), c_in, c_out)
      p['proj_bn'] = plain.norm_init(c_out)
      s['proj_bn'] = _bn_state(c_out)
    params[name], stats[name] = p, s
    c_in = c_out
  params['head'] = plain.dense_init(next(keys), c_in, num_classes)
  return params, stats


def plain_apply(params, stats, x, train, stages, bottleneck, cifar_stem,
                num_classes, width):
  """`(logits, new_stats)`."""
  del num_classes
  new_stats = {}

  def conv_bn(p, s, path, x, conv, bn, strides=(1, 1), padding='SAME'):
    y = plain.conv(p[conv], x, strides, padding)
    y, s_new = plain.batch_norm(p[bn], s[bn], y, train, BN_MOMENTUM,
                                BN_EPSILON)
    path[bn] = s_new
    return y

  top = new_stats
  if cifar_stem:
    x = conv_bn(params, stats, top, x, 'stem_conv', 'stem_bn')
  else:
    x = conv_bn(params, stats, top, x, 'stem_conv', 'stem_bn', (2, 2),
                ((3, 3), (3, 3)))
  x = jax.nn.relu(x)
  if not cifar_stem:
    x = plain.max_pool(x, (3, 3), (2, 2))
  for name, filters, strides in _layout(stages, bottleneck, width):
    p, s, out = params[name], stats[name], {}
    if bottleneck:
      y = jax.nn.relu(conv_bn(p, s, out, x, 'conv1', 'bn1'))
      y = jax.nn.relu(conv_bn(p, s, out, y, 'conv2', 'bn2', strides))
      y = conv_bn(p, s, out, y, 'conv3', 'bn3')
    else:
      y = jax.nn.relu(conv_bn(p, s, out, x, 'conv1', 'bn1', strides))
      y = conv_bn(p, s, out, y, 'conv2', 'bn2')
    if 'proj_conv' in p:
      x = conv_bn(p, s, out, x, 'proj_conv', 'proj_bn', strides)
    x = jax.nn.relu(x + y)
    new_stats[name] = out
  x = jnp.mean(x, axis=(1, 2))
  return plain.dense(params['head'], x), (new_stats if train else stats)


# -------------------------------------------------------------------- Linen --

def linen_impl(arch, spec):
  """The Linen + optax `Impl` (imports flax)."""
  import flax.linen as ln  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from benchmarks.workloads import linen_impl as impl

  class LinenBlock(ln.Module):
    filters: int
    strides: tuple
    bottleneck: bool
    train: bool

    @ln.compact
    def __call__(self, x):
      conv = lambda f, k, s=(1, 1), **kw: ln.Conv(f, k, s, use_bias=False,
                                                  **kw)
      norm = lambda **kw: ln.BatchNorm(use_running_average=not self.train,
                                       momentum=BN_MOMENTUM,
                                       epsilon=BN_EPSILON, **kw)
      f, s = self.filters, self.strides
      zeros = ln.initializers.zeros
      if self.bottleneck:
        y = ln.relu(norm(name='bn1')(conv(f, (1, 1), name='conv1')(x)))
        y = ln.relu(norm(name='bn2')(conv(f, (3, 3), s, name='conv2')(y)))
        y = conv(4 * f, (1, 1), name='conv3')(y)
        y = norm(scale_init=zeros, name='bn3')(y)
      else:
        y = ln.relu(norm(name='bn1')(conv(f, (3, 3), s, name='conv1')(x)))
        y = conv(f, (3, 3), name='conv2')(y)
        y = norm(scale_init=zeros, name='bn2')(y)
      if x.shape != y.shape:
        x = conv(y.shape[-1], (1, 1), s, name='proj_conv')(x)
        x = norm(name='proj_bn')(x)
      return ln.relu(x + y)

  class LinenResNet(ln.Module):
    stages: tuple
    bottleneck: bool
    cifar_stem: bool
    num_classes: int
    width: int

    @ln.compact
    def __call__(self, x, train=True):
      norm = lambda **kw: ln.BatchNorm(use_running_average=not train,
                                       momentum=BN_MOMENTUM,
                                       epsilon=BN_EPSILON, **kw)
      if self.cifar_stem:
        x = ln.Conv(self.width, (3, 3), use_bias=False, name='stem_conv')(x)
      else:
        x = ln.Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
                    use_bias=False, name='stem_conv')(x)
      x = ln.relu(norm(name='stem_bn')(x))
      if not self.cifar_stem:
        x = ln.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
      for name, filters, strides in _layout(self.stages, self.bottleneck,
                                            self.width):
        x = LinenBlock(filters, strides, self.bottleneck, train,
                       name=name)(x)
      x = jnp.mean(x, axis=(1, 2))
      return ln.Dense(self.num_classes, name='head')(x)

  return impl.make_impl(LinenResNet(**arch), spec,
                        optax.sgd(LEARNING_RATE, momentum=BETA),
                        stateful=True, train_kwargs={'train': True},
                        eval_kwargs={'train': False})


def make(name='resnet18', batch=64, size=32, width=64,
         stages=None) -> Workload:
  """ResNet `name` ('resnet18' or 'resnet50') on `size`x`size` images.

  `stages` (blocks per stage) overrides the depth, e.g. for quick tests.
  """
  arch = dict(ARCHS[name], width=width)
  if stages is not None:
    arch['stages'] = tuple(stages)
  spec = ((batch, size, size, 3), jnp.float32)

  def make_batch(rng):
    kx, ky = jax.random.split(rng)
    return {'x': jax.random.normal(kx, spec[0]),
            'y': jax.random.randint(ky, (batch,), 0, arch['num_classes'])}

  impls = {
      'flaxish': lambda: flaxish_impl.make_impl(
          ResNet.partial(**arch), spec,
          optim.Momentum(LEARNING_RATE, beta=BETA), stateful=True,
          train_kwargs={'train': True}, eval_kwargs={'train': False}),
      'plain_jax': lambda: plain_impl.make_impl(
          lambda rng: plain_init(rng, **arch),
          lambda p, s, x, train: plain_apply(p, s, x, train, **arch),
          plain_impl.momentum(LEARNING_RATE, BETA)),
  }
  if have_flax():
    impls['linen'] = lambda: linen_impl(arch, spec)
  depth = {'resnet18': 'ResNet-18', 'resnet50': 'ResNet-50'}[name]
  if stages is not None:
    depth += f' with stages {tuple(stages)}'
  title = (f'{depth} (BatchNorm), batch {batch}, {size}x{size}x3'
           f'{"" if width == 64 else f", width {width}"}, Momentum SGD')
  return Workload(name, title, dict(arch, batch=batch, size=size), make_batch,
                  impls, batch, 'images')
