"""Where the Transformer LM's CPU train step spends its time: JAX vs PyTorch.

    python -m benchmarks.cpu_flags_transformer_phases jax
    python -m benchmarks.cpu_flags_transformer_phases pytorch
    python -m benchmarks.cpu_flags_transformer_phases jax-matmul
    python -m benchmarks.cpu_flags_transformer_phases pytorch-matmul

Times, at the CPU sizes of `bench_cpu_flags.SIZES['transformer_lm']`, the
loss alone (forward), its gradient (forward + backward) and the full train
step with Adam, each the median of 30 calls after 5 untimed ones. The JAX
side is the hand-written workload under flaxish's CPU defaults. The
`-matmul` modes time the output layer's two products alone: the forward
`x @ W` and the weight gradient `x^T @ dy` (contracting the 512 tokens).
Run the two
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


def matmuls(library: str):
  """GFLOP/s of `x @ W` and `x^T @ dy` at the output layer's shapes."""
  tokens = CONFIG['batch'] * CONFIG['length']
  emb, vocab = CONFIG['emb'], CONFIG['vocab']
  if library == 'jax':
    import flaxish  # pylint: disable=g-import-not-at-top,unused-import
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    x, w, dy = (jnp.ones((tokens, emb)), jnp.ones((emb, vocab)),
                jnp.ones((tokens, vocab)))
    forward, weight_grad = jax.jit(lambda a, b: a @ b), jax.jit(
        lambda a, b: a.T @ b)
    # The same product with the transpose written to memory first.
    written_out = jax.jit(
        lambda a, b: jax.lax.optimization_barrier(a.T) @ b)
    run = lambda f, a, b: f(a, b).block_until_ready()
  else:
    import torch  # pylint: disable=g-import-not-at-top
    x, w, dy = (torch.ones(tokens, emb), torch.ones(emb, vocab),
                torch.ones(tokens, vocab))
    forward, weight_grad = (lambda a, b: a @ b), (lambda a, b: a.T @ b)
    written_out = lambda a, b: a.T.contiguous() @ b
    run = lambda f, a, b: f(a, b)
  flops = 2 * tokens * emb * vocab
  out = {}
  for name, f, a, b in (('x @ W', forward, x, w),
                        ('x^T @ dy', weight_grad, x, dy),
                        ('x^T written out, @ dy', written_out, x, dy)):
    ms = _median_ms(lambda: run(f, a, b), calls=50, warmup=10)  # pylint: disable=cell-var-from-loop
    out[name] = f'{ms} ms, {flops / ms / 1e6:.0f} GFLOP/s'
  return out


if __name__ == '__main__':
  which = sys.argv[1] if len(sys.argv) > 1 else 'jax'
  if which.endswith('-matmul'):
    result = matmuls(which.split('-')[0])
  else:
    result = jax_phases() if which == 'jax' else pytorch_phases()
  print(which, json.dumps(result))
