"""The benchmark workloads written in PyTorch (eager), for CPU comparisons.

The same models, sizes and update rules as `benchmarks/workloads/` (the
MNIST CNN, ResNet-18/50 with BatchNorm, the pre-LayerNorm decoder LM), in
the idiomatic PyTorch way a user would write them: `torch.nn` modules in
PyTorch's default NCHW layout, `torch.optim.SGD(momentum=)` /
`torch.optim.Adam`, `F.scaled_dot_product_attention(is_causal=True)`
(or, with `explicit_attention=True`, the attention written out as XLA
computes it). The
parameter initialisation is PyTorch's own (it does not affect step time).

`make(name, **config) -> (step, items_per_step)`, where `step()` runs one
training step on a fixed synthetic batch and returns the loss as a float
(so it waits for the result). Imported only by the PyTorch worker of
`bench_cpu_flags.py`; needs `torch`.
"""
import math
from typing import Callable, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ['make']

# The update rules of the JAX workloads (mnist_cnn.py, resnet.py,
# transformer_lm.py).
MNIST_LR, RESNET_LR, BETA, LM_LR = 0.02, 0.05, 0.9, 1e-3
# flaxish/Linen BatchNorm momentum 0.9 is PyTorch's momentum 0.1.
BN_MOMENTUM, BN_EPSILON = 0.1, 1e-5
RESNET_ARCHS = {
    'resnet18': dict(stages=(2, 2, 2, 2), bottleneck=False, cifar_stem=True,
                     num_classes=10),
    'resnet50': dict(stages=(3, 4, 6, 3), bottleneck=True, cifar_stem=False,
                     num_classes=1000),
}


class MnistCNN(nn.Module):
  """Conv32-relu-avgpool-Conv64-relu-avgpool-Dense256-relu-Dense10."""

  def __init__(self):
    super().__init__()
    self.conv0 = nn.Conv2d(1, 32, 3, padding=1)
    self.conv1 = nn.Conv2d(32, 64, 3, padding=1)
    self.dense2 = nn.Linear(7 * 7 * 64, 256)
    self.dense3 = nn.Linear(256, 10)

  def forward(self, x):
    x = F.avg_pool2d(F.relu(self.conv0(x)), 2)
    x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
    x = F.relu(self.dense2(torch.flatten(x, 1)))
    return self.dense3(x)


def _bn(features, zero_scale=False):
  bn = nn.BatchNorm2d(features, eps=BN_EPSILON, momentum=BN_MOMENTUM)
  if zero_scale:
    nn.init.zeros_(bn.weight)
  return bn


class Block(nn.Module):
  """A basic or bottleneck residual block, stride on the 3x3 convolution."""

  def __init__(self, c_in, filters, stride, bottleneck):
    super().__init__()
    conv = lambda a, b, k, s=1: nn.Conv2d(a, b, k, s, padding=k // 2,
                                          bias=False)
    if bottleneck:
      c_out = 4 * filters
      self.body = nn.Sequential(
          conv(c_in, filters, 1), _bn(filters), nn.ReLU(),
          conv(filters, filters, 3, stride), _bn(filters), nn.ReLU(),
          conv(filters, c_out, 1), _bn(c_out, zero_scale=True))
    else:
      c_out = filters
      self.body = nn.Sequential(
          conv(c_in, filters, 3, stride), _bn(filters), nn.ReLU(),
          conv(filters, filters, 3), _bn(filters, zero_scale=True))
    self.proj = None
    if c_in != c_out or stride != 1:
      self.proj = nn.Sequential(conv(c_in, c_out, 1, stride), _bn(c_out))
    self.c_out = c_out

  def forward(self, x):
    shortcut = x if self.proj is None else self.proj(x)
    return F.relu(shortcut + self.body(x))


class ResNet(nn.Module):
  """ResNet v1 as in `benchmarks/workloads/resnet.py`."""

  def __init__(self, stages, bottleneck, cifar_stem, num_classes, width):
    super().__init__()
    if cifar_stem:
      stem = [nn.Conv2d(3, width, 3, padding=1, bias=False), _bn(width),
              nn.ReLU()]
    else:
      stem = [nn.Conv2d(3, width, 7, 2, padding=3, bias=False), _bn(width),
              nn.ReLU(), nn.MaxPool2d(3, 2, padding=1)]
    blocks, c_in = [], width
    for s, n in enumerate(stages):
      for i in range(n):
        stride = 2 if s > 0 and i == 0 else 1
        blocks.append(Block(c_in, width * 2**s, stride, bottleneck))
        c_in = blocks[-1].c_out
    self.features = nn.Sequential(*stem, *blocks)
    self.head = nn.Linear(c_in, num_classes)

  def forward(self, x):
    return self.head(self.features(x).mean(dim=(2, 3)))


def _explicit_causal_attention(q, k, v):
  """`softmax(q k^T / sqrt(d) + causal mask) v`, as XLA computes it."""
  t = q.shape[-2]
  w = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
  mask = torch.ones(t, t, dtype=torch.bool).tril()
  return torch.softmax(w.masked_fill(~mask, float('-inf')), -1) @ v


def _fused_causal_attention(q, k, v):
  return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class DecoderBlock(nn.Module):
  """Pre-LayerNorm block: causal self-attention, then a gelu MLP."""

  def __init__(self, emb, heads, mlp, attention):
    super().__init__()
    self.heads = heads
    self.attention = attention
    self.ln1 = nn.LayerNorm(emb, eps=1e-6)
    self.qkv = nn.Linear(emb, 3 * emb)
    self.out = nn.Linear(emb, emb)
    self.ln2 = nn.LayerNorm(emb, eps=1e-6)
    self.mlp_in = nn.Linear(emb, mlp)
    self.mlp_out = nn.Linear(mlp, emb)

  def forward(self, x):
    b, t, d = x.shape
    q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
    split = lambda z: z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
    y = self.attention(split(q), split(k), split(v))
    x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
    y = F.gelu(self.mlp_in(self.ln2(x)), approximate='tanh')
    return x + self.mlp_out(y)


class DecoderLM(nn.Module):
  """Tokens `[batch, length]` -> logits `[batch, length, vocab]`."""

  def __init__(self, vocab, emb, heads, mlp, layers, length,
               explicit_attention=False):
    super().__init__()
    attention = (_explicit_causal_attention if explicit_attention
                 else _fused_causal_attention)
    self.embed = nn.Embedding(vocab, emb)
    self.pos = nn.Parameter(0.02 * torch.randn(length, emb))
    self.blocks = nn.Sequential(*[DecoderBlock(emb, heads, mlp, attention)
                                  for _ in range(layers)])
    self.final_ln = nn.LayerNorm(emb, eps=1e-6)
    self.head = nn.Linear(emb, vocab)

  def forward(self, tokens):
    x = self.embed(tokens) + self.pos[None, :tokens.shape[1]]
    return self.head(self.final_ln(self.blocks(x)))


def _step_fn(model, optimizer, x, y) -> Callable[[], float]:
  model.train()

  def step():
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    optimizer.step()
    return loss.item()

  return step


def make(name: str, batch: int, **config) -> Tuple[Callable[[], float], int]:
  """`(step, items_per_step)` of workload `name` ('mnist_cnn', 'resnet18',
  'resnet50', 'transformer_lm') at the sizes in `config` (the keys of the
  JAX workload's preset: `size`, `width`; `length`, `vocab`, `emb`, ...)."""
  torch.manual_seed(0)
  if name == 'mnist_cnn':
    model = MnistCNN()
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), MNIST_LR, momentum=BETA)
    return _step_fn(model, opt, x, y), batch
  if name in RESNET_ARCHS:
    arch = dict(RESNET_ARCHS[name], width=config.get('width', 64))
    if config.get('stages') is not None:
      arch['stages'] = tuple(config['stages'])
    size = config.get('size', 32)
    model = ResNet(**arch)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, arch['num_classes'], (batch,))
    opt = torch.optim.SGD(model.parameters(), RESNET_LR, momentum=BETA)
    return _step_fn(model, opt, x, y), batch
  if name == 'transformer_lm':
    if config.get('dtype', 'float32') != 'float32':
      raise ValueError('the PyTorch LM runs in float32 only')
    length, vocab = config['length'], config['vocab']
    model = DecoderLM(vocab, config['emb'], config['heads'], config['mlp'],
                      config['layers'], length,
                      config.get('explicit_attention', False))
    x = torch.randint(0, vocab, (batch, length))
    y = torch.randint(0, vocab, (batch, length))
    opt = torch.optim.Adam(model.parameters(), LM_LR)
    return _step_fn(model, opt, x, y), batch * length
  raise ValueError(f'unknown workload {name!r}')


def parameter_count(name: str, batch: int = 2, **config) -> int:
  """Number of parameters of the PyTorch model (to check it matches JAX)."""
  del batch
  if name == 'mnist_cnn':
    model = MnistCNN()
  elif name in RESNET_ARCHS:
    arch = dict(RESNET_ARCHS[name], width=config.get('width', 64))
    model = ResNet(**arch)
  else:
    model = DecoderLM(config['vocab'], config['emb'], config['heads'],
                      config['mlp'], config['layers'], config['length'])
  return sum(math.prod(p.shape) for p in model.parameters())
