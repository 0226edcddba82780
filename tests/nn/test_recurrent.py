"""Tests of flaxish.nn.recurrent: cells against NumPy, under lax.scan and
jax_utils.scan_in_dim against Python loops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import jax_utils, nn
from tests.nn._layer_testing import check_grads_fd
from tests.nn._layer_testing import KEY, as_np, np_conv, np_init, rand

INITS = dict(kernel_init=np_init, recurrent_kernel_init=np_init,
             bias_init=np_init)


def _sigmoid(x):
  return 1. / (1. + np.exp(-x))


def _dense(p, name, x):
  return x @ p[name]['kernel'] + p[name].get('bias', 0.)


def _np_lstm(p, carry, x):
  c, h = carry
  i = _sigmoid(_dense(p, 'ii', x) + _dense(p, 'hi', h))
  f = _sigmoid(_dense(p, 'if', x) + _dense(p, 'hf', h))
  g = np.tanh(_dense(p, 'ig', x) + _dense(p, 'hg', h))
  o = _sigmoid(_dense(p, 'io', x) + _dense(p, 'ho', h))
  c = f * c + i * g
  h = o * np.tanh(c)
  return (c, h), h


def _np_gru(p, h, x):
  r = _sigmoid(_dense(p, 'ir', x) + _dense(p, 'hr', h))
  z = _sigmoid(_dense(p, 'iz', x) + _dense(p, 'hz', h))
  n = np.tanh(_dense(p, 'in', x) + r * _dense(p, 'hn', h))
  h = (1. - z) * n + z * h
  return h, h


def _np_scan(step, carry, xs):
  ys = []
  for x in xs:
    carry, y = step(carry, x)
    ys.append(y)
  return carry, np.stack(ys)


def test_lstm_cell_step_and_param_names():
  x = rand((3, 2))
  carry = (rand((3, 4), 1), rand((3, 4), 2))
  ((c, h), y), params = nn.LSTMCell.init(KEY, carry, x, **INITS)
  shapes = jax.tree_util.tree_map(np.shape, params)
  for gate in 'ifgo':
    assert shapes['i' + gate] == {'kernel': (2, 4)}  # no bias on the input
    assert shapes['h' + gate] == {'kernel': (4, 4), 'bias': (4,)}
  (c_ref, h_ref), _ = _np_lstm(as_np(params), carry, x)
  np.testing.assert_allclose(c, c_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(y, h)


def test_gru_cell_step_and_param_names():
  x, h = rand((3, 2)), rand((3, 4), 1)
  (new_h, y), params = nn.GRUCell.init(KEY, h, x, **INITS)
  shapes = jax.tree_util.tree_map(np.shape, params)
  for name in ('ir', 'iz', 'in', 'hn'):
    assert shapes[name] == {'kernel': shapes[name]['kernel'], 'bias': (4,)}
  assert shapes['hr'] == shapes['hz'] == {'kernel': (4, 4)}
  ref, _ = _np_gru(as_np(params), h, x)
  np.testing.assert_allclose(new_h, ref, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(y, new_h)
  check_grads_fd(lambda p, h, x: nn.GRUCell.call(p, h, x)[0],
                 (params, jnp.asarray(h), jnp.asarray(x)))


@pytest.mark.parametrize('cell,np_step', [(nn.LSTMCell, _np_lstm),
                                          (nn.GRUCell, _np_gru)])
def test_cells_under_lax_scan_match_a_python_loop(cell, np_step):
  xs = rand((6, 2, 3))  # (time, batch, features)
  carry = cell.initialize_carry(KEY, (2,), 5)
  _, params = cell.init(KEY, carry, xs[0], **INITS)
  model = nn.Model(cell, params)
  final, ys = jax.jit(lambda m, c, xs: jax.lax.scan(m, c, xs))(model, carry,
                                                              xs)
  ref_final, ref_ys = _np_scan(lambda c, x: np_step(as_np(params), c, x),
                               as_np(carry), xs)
  np.testing.assert_allclose(ys, ref_ys, rtol=1e-4, atol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(final),
                  jax.tree_util.tree_leaves(ref_final)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_initialize_carry():
  c, h = nn.LSTMCell.initialize_carry(KEY, (2, 3), 4)
  assert c.shape == h.shape == (2, 3, 4)
  np.testing.assert_array_equal(c, 0.)
  c, h = nn.LSTMCell.initialize_carry(jax.random.key(0), (2,), 4,
                                      init_fn=nn.initializers.normal(1.))
  assert not np.array_equal(c, h)  # the key is split between c and h
  assert nn.GRUCell.initialize_carry(KEY, (5,), 3).shape == (5, 3)
  c, h = nn.ConvLSTM.initialize_carry(KEY, (2,), (4, 4, 3))
  assert c.shape == h.shape == (2, 4, 4, 3)


def test_lstm_bf16_compute_keeps_the_carry_dtype_and_gradients():
  x = rand((2, 3))
  carry = nn.LSTMCell.initialize_carry(KEY, (2,), 4)
  ((c, h), y), params = nn.LSTMCell.init(KEY, carry, x, dtype=jnp.bfloat16,
                                         **INITS)
  assert c.dtype == h.dtype == jnp.float32  # usable as a lax.scan carry
  (_, h_ref), _ = _np_lstm(as_np(params), as_np(carry), x)
  np.testing.assert_allclose(h, h_ref, rtol=5e-2, atol=5e-2)
  check_grads_fd(lambda p, c, x: nn.LSTMCell.call(p, c, x)[1],
                 (params, (jnp.asarray(rand((2, 4), 3)),
                           jnp.asarray(rand((2, 4), 4))), jnp.asarray(x)))


def test_conv_lstm_step_and_scan():
  xs = rand((3, 2, 4, 4, 2))  # (time, batch, h, w, c)
  carry = nn.ConvLSTM.initialize_carry(KEY, (2,), (4, 4, 3))
  kw = dict(features=3, kernel_size=(3, 3), kernel_init=np_init,
            bias_init=np_init)
  _, params = nn.ConvLSTM.init(KEY, carry, xs[0], **kw)
  assert jax.tree_util.tree_map(np.shape, params) == {
      'ih': {'kernel': (3, 3, 2, 12), 'bias': (12,)},
      'hh': {'kernel': (3, 3, 3, 12), 'bias': (12,)}}
  p = as_np(params)

  def np_step(carry, x):
    c, h = carry
    gates = (np_conv(x, p['ih']['kernel'], (1, 1), 'SAME') + p['ih']['bias'] +
             np_conv(h, p['hh']['kernel'], (1, 1), 'SAME') + p['hh']['bias'])
    i, g, f, o = np.split(gates, 4, axis=-1)
    c = _sigmoid(f + 1.) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
    return (c, h), h

  model = nn.Model(nn.ConvLSTM.partial(**kw), params)
  _, ys = jax.jit(lambda m, c, xs: jax.lax.scan(m, c, xs))(model, carry, xs)
  _, ref_ys = _np_scan(np_step, as_np(carry), xs)
  np.testing.assert_allclose(ys, ref_ys, rtol=1e-4, atol=1e-4)
  small = (jnp.asarray(rand((1, 2, 2, 3), 5)), jnp.asarray(rand((1, 2, 2, 3),
                                                               6)))
  check_grads_fd(lambda p, c, x: nn.ConvLSTM.call(p, c, x, **kw)[1],
                 (params, small, jnp.asarray(xs[0, :1, :2, :2])))


class _Encoder(nn.Module):
  """A shared LSTM cell scanned over axis 1 with jax_utils.scan_in_dim."""

  def apply(self, xs, hidden=4, inits=INITS):
    cell = nn.LSTMCell.shared(name='lstm', **inits)
    carry = nn.LSTMCell.initialize_carry(jax.random.PRNGKey(1),
                                         (xs.shape[0],), hidden)
    return jax_utils.scan_in_dim(cell, carry, xs, axis=1)


def test_shared_cell_under_scan_in_dim_inside_a_module():
  xs = rand((2, 5, 3))  # (batch, time, features)
  (_, ys_init), params = _Encoder.init_by_shape(KEY, [(xs.shape,
                                                       jnp.float32)])
  assert ys_init.shape == (2, 5, 4)
  assert set(params) == {'lstm'}
  (c, h), ys = _Encoder.call(params, xs)
  carry0 = nn.LSTMCell.initialize_carry(jax.random.PRNGKey(1), (2,), 4)
  _, ref_ys = _np_scan(lambda c, x: _np_lstm(as_np(params['lstm']), c, x),
                       as_np(carry0), np.swapaxes(xs, 0, 1))
  np.testing.assert_allclose(ys, np.swapaxes(ref_ys, 0, 1), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(h, ref_ys[-1], rtol=1e-4, atol=1e-5)


def test_module_init_with_a_cell_first_called_inside_scan_in_dim():
  xs = rand((2, 5, 3))
  normal = nn.initializers.normal(0.5)  # a JAX initializer, unlike np_init
  inits = dict(kernel_init=normal, recurrent_kernel_init=normal,
               bias_init=normal)
  _, params = _Encoder.init(KEY, xs, inits=inits)
  for leaf in jax.tree_util.tree_leaves(params):
    assert not isinstance(leaf, jax.core.Tracer)
  _, p_by_shape = _Encoder.init_by_shape(KEY, [(xs.shape, jnp.float32)],
                                         inits=inits)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, p_by_shape)


def test_carry_and_inputs_must_share_batch_dims():

  class Net(nn.Module):

    def apply(self, carry, x):
      return nn.GRUCell(carry, x, name='gru')

  with pytest.raises(ValueError, match=r'^/gru: GRUCell: the carry \(3, 4\) '
                     r'and the inputs \(2, 5\) must have the same batch'):
    Net.init(KEY, jnp.zeros((3, 4)), jnp.ones((2, 5)))


@pytest.mark.parametrize('c_shape,h_shape', [((2, 4), (2, 5)),
                                             ((3, 4), (2, 4))])
def test_lstm_carry_halves_must_have_one_shape(c_shape, h_shape):

  class Net(nn.Module):

    def apply(self, carry, x):
      return nn.LSTMCell(carry, x, name='lstm')

  with pytest.raises(ValueError, match=(
      rf'^/lstm: LSTMCell: the carry \(c, h\) must be two arrays of the same '
      rf'shape, got c of shape \({c_shape[0]}, {c_shape[1]}\) and h of shape '
      rf'\({h_shape[0]}, {h_shape[1]}\); build it with '
      r'LSTMCell.initialize_carry\(rng, batch_dims, size\)$')):
    Net.init(KEY, (jnp.zeros(c_shape), jnp.zeros(h_shape)), jnp.ones((2, 3)))


def test_conv_lstm_carry_must_match_itself_and_the_features():

  class Net(nn.Module):

    def apply(self, carry, x):
      return nn.ConvLSTM(carry, x, features=4, kernel_size=(3, 3),
                         name='clstm')

  x = jnp.ones((2, 6, 6, 3))
  with pytest.raises(ValueError, match=(
      r'^/clstm: ConvLSTM: the carry \(c, h\) must be two arrays of the same '
      r'shape, got c of shape \(2, 6, 6, 4\) and h of shape \(2, 6, 6, 5\); '
      r'build it with ConvLSTM.initialize_carry')):
    Net.init(KEY, (jnp.zeros((2, 6, 6, 4)), jnp.zeros((2, 6, 6, 5))), x)
  with pytest.raises(ValueError, match=(
      r'^/clstm: ConvLSTM: the carry has shape \(2, 6, 6, 5\) but '
      r'features=4; its last axis must be the features: build it with '
      r'ConvLSTM.initialize_carry\(rng, batch_dims, output_spatial_shape \+ '
      r'\(features,\)\)$')):
    Net.init(KEY, (jnp.zeros((2, 6, 6, 5)), jnp.zeros((2, 6, 6, 5))), x)
