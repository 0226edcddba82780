"""The MNIST CNN of examples/mnist on fixed random batches, shared by the
data-parallel tests and their worker processes."""
import functools

import jax
import numpy as np

from examples.mnist import train
from flaxish import nn
from flaxish import traverse_util

GLOBAL_BATCH = 16  # 8 devices x 2 examples
NUM_STEPS = 3
LEARNING_RATE = 0.1
MOMENTUM = 0.9


def batch(step: int) -> dict:
  """The global batch of `step`: float32 images [16, 28, 28, 1], int32
  labels [16]."""
  rng = np.random.RandomState(1000 + step)
  return {'image': rng.randn(GLOBAL_BATCH, 28, 28, 1).astype(np.float32),
          'label': rng.randint(0, 10, GLOBAL_BATCH).astype(np.int32)}


@functools.lru_cache(maxsize=None)
def _initial_params():
  params = train.create_model(jax.random.PRNGKey(0)).params
  return flat(params)


def initial_params() -> dict:
  """`create_model(PRNGKey(0)).params` as host arrays (computed once)."""
  return unflat(_initial_params())


def save_params(path: str, params) -> None:
  np.savez(path, **flat(params))


def load_params(path: str) -> dict:
  with np.load(path) as f:
    return unflat({k: f[k] for k in f.files})


def make_optimizer(params):
  return train.create_optimizer(nn.Model(train.CNN, params), LEARNING_RATE,
                                MOMENTUM)


def train_step(optimizer, batch):  # pylint: disable=redefined-outer-name
  """The example's step, returning the loss: with a `replicate()`d
  optimizer inside `pmap`, `apply_gradient` averages the gradients."""
  def loss_fn(model):
    return train.cross_entropy_loss(model(batch['image']), batch['label'])
  loss, grad = jax.value_and_grad(loss_fn)(optimizer.target)
  return optimizer.apply_gradient(grad), loss


@functools.lru_cache(maxsize=None)
def reference_params(num_steps: int = NUM_STEPS) -> dict:
  """`initial_params()` after `num_steps` single-device steps on the global
  batches, flat (computed once)."""
  step = jax.jit(train_step)  # on the default device
  optimizer = make_optimizer(initial_params())
  for i in range(num_steps):
    optimizer, loss = step(optimizer, batch(i))
    float(loss)  # one step at a time
  return flat(optimizer.target.params)


def flat(params) -> dict:
  """{'Conv_0/kernel': np.ndarray, ...}."""
  return {'/'.join(k): np.asarray(v)
          for k, v in traverse_util.flatten_dict(params).items()}


def unflat(flat_params: dict) -> dict:
  return traverse_util.unflatten_dict(
      {tuple(k.split('/')): v for k, v in flat_params.items()})


def assert_params_close(actual: dict, expected: dict, what: str,
                        rtol: float = 1e-5, atol: float = 1e-6) -> None:
  assert sorted(actual) == sorted(expected), (what, sorted(actual))
  for name in expected:
    np.testing.assert_allclose(actual[name], expected[name], rtol=rtol,
                               atol=atol, err_msg=f'{what}: {name}')

