"""Models under every JAX transform: jit, grad, vmap, pmap, jacfwd/jacrev,
hessian and lax.scan, each against an independent computation."""
import jax
import jax.numpy as jnp
import numpy as np

from flaxish import nn
from tests.nn._helpers import MLP

X = jnp.linspace(-1, 1, 20).reshape(4, 5)
Y = jnp.linspace(0, 1, 8).reshape(4, 2)


def _model():
  _, params = MLP.init(jax.random.PRNGKey(0), X)
  return nn.Model(MLP, params)


def _forward_np(params, x):
  p = jax.tree_util.tree_map(np.asarray, params)
  h = np.tanh(x @ p['Affine_0']['kernel'] + p['Affine_0']['bias'])
  return h @ p['Affine_1']['kernel'] + p['Affine_1']['bias']


def _loss(model, x, y):
  return jnp.mean((model(x) - y) ** 2)


def test_jit():
  model = _model()
  np.testing.assert_allclose(jax.jit(lambda m, x: m(x))(model, X),
                             _forward_np(model.params, np.asarray(X)),
                             rtol=1e-5)


def test_grad_of_a_model_matches_finite_differences():
  model = _model()
  grads = jax.grad(_loss)(model, X, Y)
  assert isinstance(grads, nn.Model)
  eps = 1e-3
  bias = np.asarray(model.params['Affine_1']['bias'])
  for i in range(2):
    plus, minus = bias.copy(), bias.copy()
    plus[i] += eps
    minus[i] -= eps

    def loss_with(b):
      params = dict(model.params, Affine_1=dict(model.params['Affine_1'],
                                                bias=b))
      return np.mean((_forward_np(params, np.asarray(X)) - Y) ** 2)

    fd = (loss_with(plus) - loss_with(minus)) / (2 * eps)
    np.testing.assert_allclose(grads.params['Affine_1']['bias'][i], fd,
                               rtol=1e-2, atol=1e-4)


def test_vmap_per_example_gradients_equal_a_loop():
  model = _model()
  per_example = jax.vmap(jax.grad(_loss), in_axes=(None, 0, 0))(
      model, X[:, None], Y[:, None])
  for i in range(4):
    single = jax.grad(_loss)(model, X[i:i + 1], Y[i:i + 1])
    jax.tree_util.tree_map(
        lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-5),
        per_example.params, single.params)


def test_pmap_over_8_devices():
  model = _model()
  n = jax.local_device_count()
  assert n == 8
  xs = jnp.stack([X * (i + 1) for i in range(n)])
  replicated = jax.tree_util.tree_map(lambda p: jnp.stack([p] * n), model)
  out = jax.pmap(lambda m, x: m(x))(replicated, xs)
  for i in range(n):
    np.testing.assert_allclose(out[i], _forward_np(model.params,
                                                   np.asarray(xs[i])),
                               rtol=1e-5, atol=1e-6)


def test_jacfwd_jacrev_and_hessian():
  model = _model()
  x = X[0]
  f = lambda x: model(x[None])[0]
  jf, jr = jax.jacfwd(f)(x), jax.jacrev(f)(x)
  np.testing.assert_allclose(jf, jr, rtol=1e-5, atol=1e-6)
  p = jax.tree_util.tree_map(np.asarray, model.params)
  h = np.tanh(x @ p['Affine_0']['kernel'] + p['Affine_0']['bias'])
  expected = (p['Affine_0']['kernel'] * (1 - h ** 2)) @ p['Affine_1']['kernel']
  np.testing.assert_allclose(jf, expected.T, rtol=1e-5, atol=1e-6)
  hess = jax.hessian(lambda x: f(x).sum())(x)
  np.testing.assert_allclose(hess, hess.T, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      hess, jax.jacfwd(jax.grad(lambda x: f(x).sum()))(x), rtol=1e-5,
      atol=1e-6)


def test_lax_scan_over_model_calls():
  _, params = MLP.init(jax.random.PRNGKey(0), X, hidden=5, out=5)
  model = nn.Model(MLP.partial(hidden=5, out=5), params)

  def body(h, _):
    h = model(h)
    return h, h.sum()

  final, sums = jax.lax.scan(body, X, None, length=3)
  h = np.asarray(X)
  for i in range(3):
    p = jax.tree_util.tree_map(np.asarray, params)
    h = np.tanh(h @ p['Affine_0']['kernel'] + p['Affine_0']['bias'])
    h = h @ p['Affine_1']['kernel'] + p['Affine_1']['bias']
    np.testing.assert_allclose(sums[i], h.sum(), rtol=1e-4)
  np.testing.assert_allclose(final, h, rtol=1e-4, atol=1e-5)


def test_stateful_and_stochastic_inside_jit_and_grad():

  class Noisy(nn.Module):
    def apply(self, x):
      calls = self.state('calls', (), jax.nn.initializers.zeros)
      if not self.is_initializing():
        calls.value = calls.value + 1
      return x * jax.random.bernoulli(nn.make_rng(), 0.5, x.shape)

  with nn.stateful() as state, nn.stochastic(jax.random.PRNGKey(0)):
    Noisy.init(jax.random.PRNGKey(0), X)

  @jax.jit
  def step(state, rng):
    def loss(x):
      with nn.stateful(state) as new_state, nn.stochastic(rng):
        y = Noisy.call({}, x)
      return y.sum(), new_state
    return jax.grad(loss, has_aux=True)(X)

  g1, s1 = step(state, jax.random.PRNGKey(1))
  g2, _ = step(s1, jax.random.PRNGKey(2))
  assert float(s1['/']['calls']) == 1.
  mask = jax.random.bernoulli(
      jax.random.fold_in(jax.random.PRNGKey(1), 1), 0.5, X.shape)
  np.testing.assert_array_equal(g1, mask.astype(jnp.float32))
  assert not np.array_equal(g1, g2)
