"""Tests of flaxish.cpu_defaults: the opt-in XLA:CPU settings.

XLA reads XLA_FLAGS once, when JAX's backend starts, and this pytest process
started it long ago; so the behaviour before that is checked in fresh
Python processes, each with its own environment.
"""
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from flaxish import cpu_defaults
from flaxish.cpu_defaults import Status

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = cpu_defaults.flags_for_this_jaxlib()
needs_flags = pytest.mark.skipif(
    not FLAGS, reason='no CPU defaults for this jaxlib version')


def _child(code: str, **env_changes) -> subprocess.CompletedProcess:
  """Runs `code` in a fresh interpreter without XLA_FLAGS or the variable."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('XLA_FLAGS', cpu_defaults.ENV)}
  env.update(env_changes)
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                        env=env, capture_output=True, text=True, timeout=240,
                        check=False)


def _run(code: str, **env_changes) -> dict:
  """Runs `code` in a fresh interpreter; returns the JSON it prints last."""
  proc = _child(code, **env_changes)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_changes_no_environment_variable_and_no_jax_setting():
  out = _run("""
    import json, os
    import jax
    env = dict(os.environ)
    config = {k: repr(getattr(jax.config, k)) for k in dir(jax.config)
              if k.startswith('jax_')}
    import flaxish
    print(json.dumps({
        'env': [k for k in set(env) | set(os.environ)
                if env.get(k) != os.environ.get(k)],
        'config': [k for k in config
                   if repr(getattr(jax.config, k)) != config[k]],
        'n_config': len(config),
        'started': flaxish.cpu_defaults.jax_started()}))
  """)
  assert out == {'env': [], 'config': [], 'n_config': out['n_config'],
                 'started': False}
  assert out['n_config'] > 50  # the settings were really read


REPORT = """
  import json, logging, os
  logging.basicConfig(level=logging.INFO)
  {before}
  from flaxish import cpu_defaults
  status = {call}
  import jax, jax.numpy as jnp
  # A gradient convolution compiles and runs under the flags in effect.
  conv = lambda x, w: jnp.sum(jax.lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  g = jax.jit(jax.grad(conv))(jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 4)))
  print(json.dumps({{
      'status': status and status.value,
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'devices': jax.device_count(),
      'grad_sum': float(g.sum())}}))
"""


def _report(before='pass', call='cpu_defaults.apply()', **env):
  return _run(REPORT.format(before=before, call=call), **env)


@needs_flags
def test_apply_before_jax_starts_adds_the_flags():
  out = _report(before='import jax, jax.numpy')  # importing jax is fine
  assert out['status'] == 'applied'
  assert out['xla_flags'].split() == list(FLAGS)
  # d sum(conv(x, w)) / dx with ones: each input pixel counts the 3x3
  # windows (4 output channels) that reach it, 8 * 3 - 2 per axis.
  assert out['grad_sum'] == (8 * 3 - 2)**2 * 4 * 2 * 3


@needs_flags
def test_the_environment_variable_applies_them_at_import():
  out = _report(call='None; import flaxish', **{cpu_defaults.ENV: '1'})
  assert out['xla_flags'].split() == list(FLAGS)


@needs_flags
def test_apply_reports_what_it_added():
  code = REPORT.format(before='pass', call='cpu_defaults.apply()')
  proc = _child(code)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'added {" ".join(FLAGS)} to XLA_FLAGS' in proc.stderr


def test_xla_reads_its_flags_when_the_backend_starts_not_at_import():
  """What `apply` relies on: flags set after `import jax` still count.

  An illegal value set after `import jax` must make the first computation
  fail; if a future JAX read XLA_FLAGS at import, it would not.
  """
  code = """
    import os, jax, jax.numpy as jnp
    os.environ['XLA_FLAGS'] = '--xla_cpu_experimental_ynn_fusion_type=-bogus'
    print(float(jnp.ones(3).sum()))
  """
  proc = _child(code)
  assert proc.returncode != 0
  assert 'xla_cpu_experimental_ynn_fusion_type' in proc.stderr


@needs_flags
def test_other_user_flags_are_kept():
  user = '--xla_force_host_platform_device_count=2'
  out = _report(XLA_FLAGS=user)
  assert out['status'] == 'applied'
  assert out['xla_flags'].split() == [user, *FLAGS]
  assert out['devices'] == 2


@needs_flags
def test_a_flag_the_user_set_is_never_overridden():
  user = ' '.join(f.split('=', 1)[0] + '=' for f in FLAGS)  # e.g. YNN off
  out = _report(XLA_FLAGS=user)
  assert out['status'] == 'user set'
  assert out['xla_flags'] == user


@pytest.mark.parametrize('value', ['0', 'false', 'OFF'])
def test_opt_out(value):
  out = _report(**{cpu_defaults.ENV: value})
  assert out['status'] == 'opted out'
  assert out['xla_flags'] == ''


@needs_flags
@pytest.mark.parametrize('start', [
    'jnp.ones(2).block_until_ready()', 'jax.devices()',
    'jax.extend.backend.backends()'])
def test_too_late_is_an_error(start):
  code = f"""
    import os, jax, jax.extend, jax.numpy as jnp
    from flaxish import cpu_defaults
    assert not cpu_defaults.jax_started()
    {start}
    assert cpu_defaults.jax_started()
    try:
      cpu_defaults.apply()
    except cpu_defaults.CpuDefaultsError as e:
      print(repr(str(e)), os.environ.get('XLA_FLAGS', ''))
  """
  proc = _child(code)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'called after JAX started its backend' in proc.stdout
  assert 'before anything runs on a JAX device' in proc.stdout
  assert proc.stdout.rstrip().endswith("'")  # XLA_FLAGS left empty


# In this process JAX's backend has started: the paths before that check.

def test_apply_in_process_statuses(monkeypatch):
  jax.devices()  # the backend has started
  assert cpu_defaults.jax_started()
  assert cpu_defaults.apply({cpu_defaults.ENV: 'no'}) == Status.OPTED_OUT
  if FLAGS:
    env = {'XLA_FLAGS': ' '.join(FLAGS)}
    assert cpu_defaults.apply(env) == Status.USER_SET
    with pytest.raises(cpu_defaults.CpuDefaultsError, match='after JAX'):
      cpu_defaults.apply({})
  monkeypatch.setattr(cpu_defaults, 'FLAGS_BY_JAXLIB', {})
  env = {}
  assert cpu_defaults.apply(env) == Status.NOT_MEASURED
  assert not env
  assert cpu_defaults.apply_if_requested({}) is None


def test_flags_are_listed_per_measured_version():
  assert cpu_defaults.flags_for_this_jaxlib((0, 99, 0)) == ()
  for version in ((0, 10, 2), (0, 11, 0), (0, 12, 1)):
    assert cpu_defaults.flags_for_this_jaxlib(version) == (
        cpu_defaults.FLAGS_BY_JAXLIB[version[:2]])


# Numerics: the defaults change how XLA runs convolutions, not what they
# compute. A small CNN with BatchNorm trains for 30 steps with and without
# them, from the same parameters and batches.
TRAIN = """
  import json
  import jax, jax.numpy as jnp, numpy as np
  from flaxish import cpu_defaults, nn, optim
  status = cpu_defaults.apply()

  class CNN(nn.Module):
    def apply(self, x):
      x = nn.Conv(x, 8, (3, 3), bias=False)
      x = nn.relu(nn.BatchNorm(x, momentum=0.9))
      x = nn.Conv(x, 16, (3, 3), strides=(2, 2))
      x = nn.avg_pool(nn.relu(x), (2, 2), (2, 2))
      return nn.Dense(x.reshape((x.shape[0], -1)), 10)

  rng = np.random.RandomState(0)
  # Two batches seen 15 times each: the loss must go down.
  xs = np.tile(rng.randn(2, 16, 12, 12, 3).astype(np.float32), (15, 1, 1, 1, 1))
  ys = np.tile(rng.randint(0, 10, (2, 16)), (15, 1))
  with nn.stateful() as state:
    _, params = CNN.init_by_shape(jax.random.PRNGKey(0),
                                  [((16, 12, 12, 3), jnp.float32)])
  opt = optim.Momentum(0.05, 0.9).create(nn.Model(CNN, params))

  @jax.jit
  def step(opt, state, x, y):
    def loss_fn(model):
      with nn.stateful(state) as new_state:
        logits = model(x)
      logp = jax.nn.log_softmax(logits)
      return -jnp.mean(jnp.take_along_axis(logp, y[:, None], -1)), new_state
    (loss, new_state), grad = jax.value_and_grad(loss_fn, has_aux=True)(
        opt.target)
    return opt.apply_gradient(grad), new_state, loss, grad

  losses = []
  for x, y in zip(xs, ys):
    opt, state, loss, grad = step(opt, state, x, y)
    losses.append(float(loss))
  flat = lambda t: np.concatenate(
      [np.ravel(l) for l in jax.tree_util.tree_leaves(t)]).tolist()
  print(json.dumps({'status': status.value,
                    'losses': losses, 'grad': flat(grad.params),
                    'params': flat(opt.target.params)}))
"""


@needs_flags
def test_training_numerics_equal_with_and_without_the_defaults():
  with_defaults = _run(TRAIN)
  plain = _run(TRAIN, **{cpu_defaults.ENV: '0'})
  assert with_defaults['status'] == 'applied'
  assert plain['status'] == 'opted out'
  assert plain['losses'][-1] < plain['losses'][0]  # it trains
  np.testing.assert_allclose(with_defaults['losses'], plain['losses'],
                             rtol=1e-4)
  for key in ('grad', 'params'):
    a, b = np.array(with_defaults[key]), np.array(plain[key])
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())
