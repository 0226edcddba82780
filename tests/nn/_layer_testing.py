"""Helpers shared by the layer tests (linear, normalization, attention, ...).

`np_init` is a NumPy initializer: it keeps the tests fast (no XLA compile of
a random initializer per new shape) and gives well-spread values.
"""
import jax
import jax.numpy as jnp
import numpy as np

KEY = jax.random.PRNGKey(0)


def rand(shape, seed=0, dtype=np.float32):
  """Standard normal NumPy values."""
  return np.random.RandomState(seed).normal(size=shape).astype(dtype)


def np_init(key, shape, dtype=np.float32):
  """An initializer `(key, shape[, dtype])` drawing N(0, 0.5^2) with NumPy."""
  del key
  seed = int(np.prod(shape)) % 1000 + len(shape)
  return (0.5 * np.random.RandomState(seed).normal(size=shape)).astype(dtype)


def as_np(tree):
  """A pytree of arrays as float64 NumPy arrays."""
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def check_grads_fd(f, args, seed=0, eps=1e-3, rtol=2e-2, atol=1e-3):
  """Checks reverse-mode gradients of `f` against central differences.

  The scalar `sum(f(*args) * w)` (random `w`) is differentiated with
  `jax.grad` and compared, along three random directions through all the
  arguments at once, with `(loss(args + eps d) - loss(args - eps d)) / 2 eps`.
  Cheaper than `jax.test_util.check_grads` (one forward and one gradient
  compile) and as strict for first-order reverse mode.
  """
  leaves, treedef = jax.tree_util.tree_flatten(args)
  unflat = lambda ls: jax.tree_util.tree_unflatten(treedef, ls)
  y = jax.jit(f)(*args)
  w = jnp.asarray(rand(np.shape(y), seed + 100), jnp.result_type(y))

  @jax.jit
  def loss(ls):
    return jnp.vdot(f(*unflat(ls)), w).real.astype(jnp.float32)

  grads = jax.jit(jax.grad(loss))(leaves)
  for k in range(3):
    d = [rand(np.shape(a), seed + 10 * k + i) for i, a in enumerate(leaves)]
    shifted = lambda s: [jnp.asarray(a + s * eps * di, jnp.result_type(a))
                         for a, di in zip(leaves, d)]
    numeric = (float(loss(shifted(1.))) - float(loss(shifted(-1.)))) / (
        2 * eps)
    analytic = sum(float(np.vdot(np.asarray(g, np.float64), di))
                   for g, di in zip(grads, d))
    np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol,
                               err_msg=f'direction {k}')


def np_conv(x, w, strides, padding, lhs_dil=None, rhs_dil=None, groups=1):
  """Cross-correlation `(B, *S, Cin) x (*K, Cin/g, Cout)`, as lax computes."""
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  n = x.ndim - 2
  lhs_dil = lhs_dil or (1,) * n
  rhs_dil = rhs_dil or (1,) * n
  if any(d > 1 for d in lhs_dil):
    shape = ((x.shape[0],) + tuple((s - 1) * d + 1 for s, d in
                                   zip(x.shape[1:-1], lhs_dil)) +
             (x.shape[-1],))
    xd = np.zeros(shape)
    xd[(slice(None),) + tuple(slice(None, None, d) for d in lhs_dil)] = x
    x = xd
  k_eff = tuple((k - 1) * d + 1 for k, d in zip(w.shape[:n], rhs_dil))
  wd = np.zeros(k_eff + w.shape[n:])
  wd[tuple(slice(None, None, d) for d in rhs_dil)] = w
  if padding == 'VALID':
    pads = [(0, 0)] * n
  elif padding == 'SAME':
    pads = []
    for s, k, st in zip(x.shape[1:-1], k_eff, strides):
      out = -(-s // st)
      total = max((out - 1) * st + k - s, 0)
      pads.append((total // 2, total - total // 2))
  else:
    pads = list(padding)
  x = np.pad(x, [(0, 0)] + pads + [(0, 0)])
  out_sp = [(s - k) // st + 1 for s, k, st in zip(x.shape[1:-1], k_eff,
                                                  strides)]
  cin_g, cout = w.shape[-2], w.shape[-1]
  cout_g = cout // groups
  y = np.zeros([x.shape[0]] + out_sp + [cout])
  for idx in np.ndindex(*out_sp):
    window = tuple(slice(i * st, i * st + k)
                   for i, st, k in zip(idx, strides, k_eff))
    patch = x[(slice(None),) + window]
    for g in range(groups):
      out = np.tensordot(patch[..., g * cin_g:(g + 1) * cin_g],
                         wd[..., g * cout_g:(g + 1) * cout_g],
                         axes=(list(range(1, n + 2)), list(range(n + 1))))
      y[(slice(None),) + idx + (slice(g * cout_g, (g + 1) * cout_g),)] = out
  return y
