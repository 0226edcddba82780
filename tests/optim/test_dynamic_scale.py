"""DynamicScale: loss scaling, unscaled float32 grads, scale schedule."""
import jax
import jax.numpy as jnp
import numpy as np

from flaxish import optim


def loss_fn(w, x):
  return jnp.sum((w * x)**2)


def test_grads_are_unscaled_and_scale_grows():
  ds = optim.DynamicScale(growth_interval=2, scale=8.)
  w, x = jnp.array([1., 2.], jnp.float16), jnp.array([3., 4.])
  scales, fins = [], []
  for _ in range(4):
    grad_fn = ds.value_and_grad(loss_fn)
    ds, is_fin, loss, grad = grad_fn(w, x)
    scales.append(float(ds.scale))
    fins.append(int(ds.fin_steps))
    assert bool(is_fin)
    assert grad.dtype == jnp.float32
    np.testing.assert_allclose(loss, 9. + 64., rtol=1e-3)
    np.testing.assert_allclose(grad, 2 * np.array([1., 2.]) * [9., 16.],
                               rtol=1e-3)
  # Grows after growth_interval finite steps in a row, then starts over.
  assert scales == [8., 8., 16., 16.]
  assert fins == [1, 2, 0, 1]


def test_non_finite_grads_back_off():
  ds = optim.DynamicScale(scale=2.**15, fin_steps=5)
  w = jnp.array([1.], jnp.float16)
  loss = lambda w: jnp.sum(w * jnp.float16(1000.))
  # 1000 * 2^15 overflows float16: the step is reported non-finite.
  new_ds, is_fin, _, _ = ds.value_and_grad(loss)(w)
  assert not bool(is_fin)
  assert float(new_ds.scale) == 2.**14
  assert int(new_ds.fin_steps) == 0
  # At a small enough scale the same loss is fine.
  new_ds, is_fin, value, grad = optim.DynamicScale(scale=8.).value_and_grad(
      loss)(w)
  assert bool(is_fin)
  np.testing.assert_allclose(grad, [1000.])


def test_has_aux_argnums_and_jit():
  ds = optim.DynamicScale(scale=4.)

  def f(a, b):
    return jnp.sum(a * b), {'aux': a.sum()}

  @jax.jit
  def step(ds, a, b):
    return ds.value_and_grad(f, argnums=1, has_aux=True)(a, b)

  ds, is_fin, (loss, aux), grad = step(ds, jnp.array([1., 2.]),
                                       jnp.array([3., 4.]))
  np.testing.assert_allclose(loss, 11.)
  np.testing.assert_allclose(aux['aux'], 3.)
  np.testing.assert_allclose(grad, [1., 2.])


def test_axis_name_averages_grads_over_devices():
  ds = optim.DynamicScale()
  xs = jnp.arange(8.)

  def step(x):
    _, _, _, grad = ds.value_and_grad(lambda w: w * x, axis_name='batch')(1.)
    return grad

  np.testing.assert_allclose(jax.pmap(step, axis_name='batch')(xs),
                             np.full(8, 3.5))
