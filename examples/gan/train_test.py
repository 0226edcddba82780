"""Tests of the GAN example on the real offline digits: one jitted step
updates both networks, the metrics against NumPy and SciPy references, the
classifier is trained once and restored, and a resumed run equals an
uninterrupted one."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from examples.gan import train
from examples.mnist import input_pipeline
from examples.mnist import train as mnist_train

HPARAMS = dict(latents=8, learning_rate=2e-4, beta1=0.5, batch_size=32,
               seed=0, samples_per_class=10)


@pytest.fixture(scope='module')
def digits():
  train_ds, test_ds = input_pipeline.get_datasets('mnist5k', seed=0)
  return ({k: v[:320] for k, v in train_ds.items()},
          {k: v[:100] for k, v in test_ds.items()})


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _softplus(x):
  return np.logaddexp(0., np.asarray(x, np.float64))


def test_one_jitted_step_updates_both_networks(digits):
  generator, g_state, discriminator = train.create_models(
      jax.random.PRNGKey(0), 8)
  g_opt, d_opt = train.create_optimizers(generator, discriminator, 2e-4, 0.5)
  batch = {k: v[:32] for k, v in digits[0].items()}
  rng = jax.random.PRNGKey(3)
  new_g, new_d, new_state, metrics = train.train_step(g_opt, d_opt, g_state,
                                                      batch, rng)
  assert int(new_g.state.step) == 1 and int(new_d.state.step) == 1
  for old, new in ((g_opt.target.params, new_g.target.params),
                   (d_opt.target.params, new_d.target.params),
                   (g_state.as_dict(), new_state.as_dict())):
    for a, b in zip(_leaves(old), _leaves(new)):
      assert a.shape == b.shape and np.abs(a - b).max() > 0
  # The losses, recomputed with NumPy from the networks' logits before the
  # step (the generator in training mode, on the same noise).
  @jax.jit
  def logits(images, labels):
    with train.nn.stateful(g_state):
      fake = generator(jax.random.normal(rng, (32, 8)), labels)
    return fake, discriminator(images * 2. - 1., labels), discriminator(
        fake, labels)
  fake, real_logits, fake_logits = logits(batch['image'], batch['label'])
  np.testing.assert_allclose(metrics['g_loss'],
                             np.mean(_softplus(-fake_logits)), rtol=1e-4)
  np.testing.assert_allclose(
      metrics['d_loss'], np.mean(_softplus(-real_logits)) +
      np.mean(_softplus(fake_logits)), rtol=1e-4)
  assert fake.min() >= -1. and fake.max() <= 1.


def test_frechet_distance_matches_scipy_sqrtm():
  linalg = pytest.importorskip('scipy.linalg')
  rng = np.random.RandomState(0)
  a = rng.randn(400, 6) @ rng.randn(6, 6)
  b = rng.randn(300, 6) @ rng.randn(6, 6) + 0.5
  mean_a, mean_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a + cov_b) -
              2 * np.trace(linalg.sqrtm(cov_a @ cov_b)).real)
  np.testing.assert_allclose(train.frechet_distance(a, b), expected,
                             rtol=1e-6)
  assert abs(train.frechet_distance(a, a)) < 1e-6
  # One dimension: (m1 - m2)^2 + (s1 - s2)^2.
  x, y = rng.randn(1000, 1) * 2 + 1, rng.randn(2000, 1) * 0.5
  sx, sy = np.std(x, ddof=1), np.std(y, ddof=1)
  np.testing.assert_allclose(train.frechet_distance(x, y),
                             (x.mean() - y.mean()) ** 2 + (sx - sy) ** 2,
                             rtol=1e-9)


def test_classifier_features_are_the_penultimate_layer(digits):
  classifier = mnist_train.create_model(jax.random.PRNGKey(1))
  images = digits[1]['image'][:20]
  features, predicted = train.classifier_features(classifier, images,
                                                  batch_size=8)
  assert features.shape == (20, 256) and features.min() >= 0.
  dense = classifier.params['Dense_3']
  logits = features @ np.asarray(dense['kernel'], np.float64) + np.asarray(
      dense['bias'])
  log_probs = np.asarray(classifier(images))
  np.testing.assert_allclose(logits - logits.max(-1, keepdims=True),
                             log_probs - log_probs.max(-1, keepdims=True),
                             atol=1e-4)
  np.testing.assert_array_equal(predicted, np.argmax(log_probs, -1))


def test_class_accuracy_counts_the_requested_class(digits, monkeypatch):
  test_ds = digits[1]
  labels = test_ds['label'][:10]
  # A "generator" that returns fixed digits, 7 of them of the requested class.
  images = test_ds['image'][:10]
  shown = labels.copy()
  shown[:3] = (labels[:3] + 1) % 10
  monkeypatch.setattr(train, 'generate', lambda *args: images)
  features = lambda x: np.asarray(x)[:, 12:15, 12:15].reshape(10, -1)
  monkeypatch.setattr(train, 'classifier_features',
                      lambda c, x: (features(x), shown))
  _, metrics = train.evaluate(None, None, None, None, labels,
                              features(images))
  assert metrics['class_accuracy'] == pytest.approx(0.7)
  assert abs(metrics['frechet_distance']) < 1e-6


def test_resumed_run_equals_an_uninterrupted_one(digits, tmp_path):
  train_ds, test_ds = digits
  classifier = mnist_train.create_model(jax.random.PRNGKey(1))
  straight = train.train(train_ds, test_ds, classifier,
                         workdir=str(tmp_path / 'a'), num_epochs=2, **HPARAMS)
  first = train.train(train_ds, test_ds, classifier,
                      workdir=str(tmp_path / 'b'), num_epochs=1, **HPARAMS)
  assert int(first['g_optimizer'].state.step) == 10
  resumed = train.train(train_ds, test_ds, classifier,
                        workdir=str(tmp_path / 'b'), num_epochs=2, **HPARAMS)
  assert resumed['epochs_run'] == 1
  for name in ('g_optimizer', 'd_optimizer'):
    assert int(resumed[name].state.step) == 20
  for name in ('g_optimizer', 'd_optimizer', 'g_state'):
    for a, b in zip(_leaves(straight[name]), _leaves(resumed[name])):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=name)
  assert resumed['test'] == pytest.approx(straight['test'])
  records = [json.loads(line) for line in
             (tmp_path / 'b' / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['split'], r['epoch']) for r in records] == [
      ('train', 1), ('samples', 1), ('train', 2), ('samples', 2)]
  for name in ('samples_1.png', 'samples_2.png', 'curves.png'):
    assert (tmp_path / 'b' / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_classifier_is_trained_once_then_restored(digits, tmp_path):
  train_ds, test_ds = digits
  trained = train.get_classifier(str(tmp_path), train_ds, test_ds,
                                 num_epochs=1)
  restored = train.get_classifier(str(tmp_path), None, None)
  for a, b in zip(_leaves(trained.params), _leaves(restored.params)):
    np.testing.assert_array_equal(a, b)
  fresh = mnist_train.create_model(jax.random.PRNGKey(0))
  assert np.abs(_leaves(fresh.params)[0] - _leaves(trained.params)[0]).max() > 0


def test_batch_larger_than_the_data_is_an_error(digits):
  train_ds, test_ds = digits
  with pytest.raises(ValueError, match='batch_size 1000 is larger than the '
                     'training set'):
    train.train(train_ds, test_ds, None, workdir=None, num_epochs=1,
                **dict(HPARAMS, batch_size=1000))


def test_main_needs_a_workdir_or_a_classifier_checkpoint():
  main = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'main.py')
  proc = subprocess.run([sys.executable, main], capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.rstrip().endswith(
      'give --workdir or --classifier_checkpoint'), proc.stderr[-2000:]
