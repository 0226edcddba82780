"""End-to-end tests of the VAE example on the real offline digits: the ELBO
improves from init, the KL and reconstruction terms against NumPy, sampling
is deterministic per rng, resume, and failing fast without tfds data."""
import json
import math

import jax
import numpy as np
import pytest

from examples.vae import input_pipeline
from examples.vae import train


@pytest.fixture(scope='module')
def digits():
  train_ds, test_ds = input_pipeline.get_datasets('mnist5k', seed=0)
  return ({k: v[:640] for k, v in train_ds.items()},
          {k: v[:200] for k, v in test_ds.items()})


def test_kl_matches_numpy_on_a_small_case():
  mean = np.array([[0., 0.], [1.5, -0.5], [-2., 0.3]], np.float32)
  logvar = np.array([[0., 0.], [0.4, -1.2], [-3., 1.]], np.float32)
  # KL(N(m, s^2) || N(0, 1)) = log(1 / s) + (s^2 + m^2) / 2 - 1/2, per dim.
  std = np.exp(logvar / 2)
  expected = np.sum(np.log(1 / std) + (std ** 2 + mean ** 2) / 2 - 0.5, -1)
  actual = np.asarray(train.kl_divergence(mean, logvar))
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
  assert actual[0] == 0.
  # The same for one dimension by numerical integration of p log(p / q).
  x = np.linspace(-30, 30, 600001)
  m, s = 1.5, math.exp(0.2)
  p = np.exp(-(x - m) ** 2 / (2 * s * s)) / (s * math.sqrt(2 * math.pi))
  q = np.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)
  integral = np.sum(p * (np.log(p + 1e-300) - np.log(q))) * (x[1] - x[0])
  one_dim = float(train.kl_divergence(np.array([[m]]), np.array([[0.4]]))[0])
  np.testing.assert_allclose(one_dim, integral, rtol=1e-4)


def test_reconstruction_term_matches_numpy():
  rng = np.random.RandomState(0)
  logits = rng.randn(3, 4, 4, 1).astype(np.float32) * 3
  labels = (rng.rand(3, 4, 4, 1) > 0.5).astype(np.float32)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = -np.sum(labels * np.log(p) + (1 - labels) * np.log(1 - p),
                     axis=(1, 2, 3))
  np.testing.assert_allclose(
      train.binary_cross_entropy_with_logits(logits, labels), expected,
      rtol=1e-5)


def test_binarized_test_set_is_seeded_and_binary(digits):
  _, test_ds = digits
  assert set(np.unique(test_ds['image'])) == {0., 1.}
  _, again = input_pipeline.get_datasets('mnist5k', seed=0)
  np.testing.assert_array_equal(test_ds['image'], again['image'][:200])


def test_sampling_is_deterministic_for_a_fixed_rng(digits):
  model = train.create_model(jax.random.PRNGKey(0), latents=2)
  first = np.asarray(train.sample(model, jax.random.PRNGKey(7), 6))
  again = np.asarray(train.sample(model, jax.random.PRNGKey(7), 6))
  other = np.asarray(train.sample(model, jax.random.PRNGKey(8), 6))
  assert first.shape == (6, 28, 28, 1)
  assert 0. <= first.min() and first.max() <= 1.
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - other).max() > 1e-3
  # The reparameterization noise comes from nn.stochastic's rng.
  images = digits[1]['image']
  outputs = [jax.device_get(train.eval_step(model, images,
                                            jax.random.PRNGKey(seed)))
             for seed in (1, 1, 2)]
  assert outputs[0] == outputs[1]
  assert outputs[0]['recon'] != outputs[2]['recon']


def test_elbo_improves_from_init_and_training_resumes(digits, tmp_path):
  train_ds, test_ds = digits
  hparams = dict(latents=2, learning_rate=1e-3, batch_size=64, seed=0)
  init_rng, eval_rng = jax.random.split(jax.random.PRNGKey(0), 3)[1:]
  at_init = train.evaluate(train.create_model(init_rng, 2), test_ds,
                           eval_rng)
  np.testing.assert_allclose(at_init['elbo'],
                             -(at_init['recon'] + at_init['kl']), rtol=1e-6)
  first = train.train(train_ds, test_ds, workdir=str(tmp_path),
                      num_epochs=1, **hparams)
  assert int(first['optimizer'].state.step) == 10
  result = train.train(train_ds, test_ds, workdir=str(tmp_path),
                       num_epochs=2, **hparams)  # resumes after epoch 1
  assert result['epochs_run'] == 1
  trained = result['test']
  assert int(result['optimizer'].state.step) == 20
  # At init the decoder is near p = 1/2 per pixel: about 784 log 2 nats.
  assert at_init['elbo'] < -400
  assert trained['elbo'] > at_init['elbo'] + 150, (at_init, trained)
  assert trained['kl'] > 0.
  for name in ('reconstructions.png', 'samples.png', 'latent_space.png',
               'curves.png'):
    assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', name
  records = [json.loads(line) for line in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['split'], r['epoch']) for r in records] == [
      ('train', 1), ('test', 1), ('train', 2), ('test', 2)]
  assert records[-1]['elbo'] == pytest.approx(trained['elbo'])
  # The checkpoint of epoch 2 is restored: nothing is left to run.
  again = train.train(train_ds, test_ds, workdir=str(tmp_path), num_epochs=2,
                      **hparams)
  assert again['epochs_run'] == 0 and again['test'] is None
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         again['optimizer'].target.params,
                         result['optimizer'].target.params)


def test_batch_larger_than_the_data_is_an_error(digits):
  train_ds, test_ds = digits
  with pytest.raises(ValueError, match='batch_size 1000 is larger than the '
                     'training set'):
    train.train(train_ds, test_ds, workdir=None, latents=2,
                learning_rate=1e-3, batch_size=1000, num_epochs=1, seed=0)


def test_missing_tfds_data_fails_fast_and_suggests_mnist5k(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(RuntimeError, match='--dataset=mnist5k'):
    input_pipeline.get_datasets('mnist', tfds_data_dir=str(tmp_path))
