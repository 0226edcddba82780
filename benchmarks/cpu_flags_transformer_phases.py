"""Where the Transformer LM's CPU train step spends its time: JAX vs PyTorch.

    python -m benchmarks.cpu_flags_transformer_phases jax
    python -m benchmarks.cpu_flags_transformer_phases pytorch

Times, at the CPU sizes of `bench_cpu_flags.SIZES['transformer_lm']`, the
loss alone (forward), its gradient (forward + backward) and the full train
step with Adam, each the median of 30 calls after 5 untimed ones. The JAX
side is the hand-written workload under flaxish's CPU defaults. Run the two
alternately, a few times, for a comparison (findings in
`benchmarks/README.md`, section "CPU defaults").
"""
import json
import statistics
import sys
import time

from benchmarks.bench_cpu_flags import SIZES

CONFIG = SIZES['transformer_lm']


def _median_ms(fn, calls=30, warmup=5) -> float:
  times = []
  for i in range(calls + warmup):
    start = time.perf_counter()
    fn()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return round(statistics.median(times) * 1e3, 2)


def jax_phases():
  import flaxish  # pylint: disable=g-import-not-at-top,unused-import
  import jax  # pylint: disable=g-import-not-at-top
  from benchmarks import workloads  # pylint: disable=g-import-not-at-top
  w = workloads.build('transformer_lm', 'cpu', **CONFIG)
  batch = w.make_batch(jax.random.PRNGKey(1))
  impl = w.impls['plain_jax']()
  params, stats = impl.init(jax.random.PRNGKey(0), batch)
  loss = jax.jit(lambda p: impl.loss(p, stats, batch)[0])
  grad = jax.jit(jax.grad(lambda p: impl.loss(p, stats, batch)[0]))
  step = jax.jit(impl.train_step, donate_argnums=0)
  state = [impl.make_state(params, stats)]

  def train_step():
    state[0], value = step(state[0], batch)
    float(value)

  return {'forward': _median_ms(lambda: float(loss(params))),
          'forward+backward': _median_ms(
              lambda: jax.block_until_ready(grad(params))),
          'step': _median_ms(train_step)}


def pytorch_phases():
  import torch  # pylint: disable=g-import-not-at-top
  from torch.nn import functional as F  # pylint: disable=g-import-not-at-top
  from benchmarks import pytorch_workloads as pw  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  c = CONFIG
  model = pw.DecoderLM(c['vocab'], c['emb'], c['heads'], c['mlp'],
                       c['layers'], c['length'])
  x = torch.randint(0, c['vocab'], (c['batch'], c['length']))
  y = torch.randint(0, c['vocab'], (c['batch'], c['length']))
  opt = torch.optim.Adam(model.parameters(), pw.LM_LR)

  def loss():
    return F.cross_entropy(model(x).reshape(-1, c['vocab']), y.reshape(-1))

  def forward():
    with torch.no_grad():
      loss().item()

  def forward_backward():
    model.zero_grad(set_to_none=True)
    value = loss()
    value.backward()
    value.item()

  def train_step():
    opt.zero_grad(set_to_none=True)
    value = loss()
    value.backward()
    opt.step()
    value.item()

  return {'forward': _median_ms(forward),
          'forward+backward': _median_ms(forward_backward),
          'step': _median_ms(train_step)}


if __name__ == '__main__':
  which = sys.argv[1] if len(sys.argv) > 1 else 'jax'
  phases = jax_phases() if which == 'jax' else pytorch_phases()
  print(which, json.dumps(phases))
