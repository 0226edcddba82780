"""Class-conditional DCGAN on MNIST digits, with the 2020 flax.nn API.

Two optimizer objects, one per network, step together in one jitted
`train_step`: both gradients are taken at the current parameters (the
generator's through the discriminator, the discriminator's on real and
generated digits), then both optimizers apply them. The generator's
BatchNorm statistics are an `nn.stateful` collection carried next to them.

Sample quality is measured with the MNIST example's CNN
(`examples/mnist/train.py`): how often it recognizes the requested class in
generated digits, and the Frechet distance between its penultimate-layer
features of real test digits and of generated ones (the FID recipe with
this classifier in place of Inception; lower is better).

Read top to bottom and fork: `create_models`, `create_optimizers`,
`train_step`, `generate`, `get_classifier`, `classifier_features`,
`frechet_distance`, `evaluate`, `train_epoch`, `train`.
"""
import functools
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from examples.gan import models
from examples.mnist import train as mnist_train
from flaxish import nn
from flaxish import optim
from flaxish.metrics import JsonlWriter, plot_curves
from flaxish.training import checkpoints


def create_models(key, latents):
  """(generator Model, its batch_stats Collection, discriminator Model)."""
  g_key, d_key = jax.random.split(key)
  generator = models.Generator
  with nn.stateful() as g_state:
    _, g_params = generator.init_by_shape(
        g_key, [((1, latents), jnp.float32), ((1,), jnp.int32)])
  _, d_params = models.Discriminator.init_by_shape(
      d_key, [((1, 28, 28, 1), jnp.float32), ((1,), jnp.int32)])
  return (nn.Model(generator, g_params), g_state,
          nn.Model(models.Discriminator, d_params))


def create_optimizers(generator, discriminator, learning_rate, beta1):
  """One Adam optimizer object per network."""
  optimizer_def = optim.Adam(learning_rate=learning_rate, beta1=beta1)
  return optimizer_def.create(generator), optimizer_def.create(discriminator)


def sigmoid_cross_entropy(logits, is_real):
  """Mean of -log sigmoid(logits) (is_real) or -log(1 - sigmoid(logits))."""
  return -jnp.mean(nn.log_sigmoid(logits if is_real else -logits))


@jax.jit
def train_step(g_optimizer, d_optimizer, g_state, batch, rng):
  """One step of both networks on `batch` (images in [0, 1], labels).

  Returns (g_optimizer, d_optimizer, g_state, metrics).
  """
  labels = batch['label']
  real = batch['image'] * 2. - 1.
  latents = (g_optimizer.target.params['Dense_0']['kernel'].shape[0] -
             models.NUM_CLASSES)
  z = jax.random.normal(rng, (labels.shape[0], latents))

  def g_loss_fn(generator):
    with nn.stateful(g_state) as new_state:
      fake = generator(z, labels)
    # Non-saturating loss: the generator wants its digits called real.
    loss = sigmoid_cross_entropy(d_optimizer.target(fake, labels), True)
    return loss, (fake, new_state)

  def d_loss_fn(discriminator):
    real_loss = sigmoid_cross_entropy(discriminator(real, labels), True)
    fake_loss = sigmoid_cross_entropy(
        discriminator(jax.lax.stop_gradient(fake), labels), False)
    return real_loss + fake_loss

  (g_loss, (fake, g_state)), g_grad = jax.value_and_grad(
      g_loss_fn, has_aux=True)(g_optimizer.target)
  d_loss, d_grad = jax.value_and_grad(d_loss_fn)(d_optimizer.target)
  g_optimizer = g_optimizer.apply_gradient(g_grad)
  d_optimizer = d_optimizer.apply_gradient(d_grad)
  return g_optimizer, d_optimizer, g_state, {'g_loss': g_loss,
                                             'd_loss': d_loss}


@jax.jit
def generate(generator, g_state, z, labels):
  """Digits [batch, 28, 28, 1] in [0, 1] of the given classes, normalized
  with the running BatchNorm statistics."""
  with nn.stateful(g_state, mutable=False):
    return (generator(z, labels, train=False) + 1.) / 2.


def get_classifier(checkpoint, train_ds, test_ds, num_epochs=10, seed=0):
  """The MNIST example's CNN: restored from `checkpoint` (a checkpoint file,
  or a directory with one, such as an MNIST example's workdir) if it holds
  one, else trained there with the MNIST example's defaults and saved."""
  optimizer = mnist_train.create_optimizer(
      mnist_train.create_model(jax.random.PRNGKey(0)), 0.1, 0.9)
  if os.path.exists(checkpoint):
    restored = checkpoints.restore_checkpoint(checkpoint, optimizer)
    if restored is not optimizer:  # else: no checkpoint there
      return restored.target
  print(f'Training the MNIST classifier for the metrics, into {checkpoint}')
  return mnist_train.train(train_ds, test_ds, workdir=checkpoint,
                           learning_rate=0.1, momentum=0.9, batch_size=128,
                           num_epochs=num_epochs, seed=seed
                           )['optimizer'].target


@jax.jit
def _features_and_predictions(classifier, images):
  # truncate_at gives the list of a module's outputs, one per call (as in
  # 2020); Dense_2 is called once.
  hidden = classifier.truncate_at('/Dense_2')(images)[-1]
  return nn.relu(hidden), jnp.argmax(classifier(images), -1)


def classifier_features(classifier, images, batch_size=500):
  """(penultimate features [n, 256], predicted classes [n]) of images
  [n, 28, 28, 1] in [0, 1], as float64 / int NumPy arrays."""
  outputs = [jax.device_get(_features_and_predictions(
      classifier, images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
  return (np.concatenate([f for f, _ in outputs]).astype(np.float64),
          np.concatenate([p for _, p in outputs]))


def frechet_distance(features1, features2):
  """Frechet distance between Gaussians fitted to two feature sets [n, d]:
  |m1 - m2|^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2)).

  Tr((C1 C2)^(1/2)) is the sum of the square roots of the eigenvalues of the
  symmetric S C2 S, where S = C1^(1/2), which share C1 C2's eigenvalues.
  """
  mean1, mean2 = features1.mean(0), features2.mean(0)
  cov1 = np.atleast_2d(np.cov(features1, rowvar=False))
  cov2 = np.atleast_2d(np.cov(features2, rowvar=False))
  eigenvalues, eigenvectors = np.linalg.eigh(cov1)
  sqrt_cov1 = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))
               ) @ eigenvectors.T
  product_eigenvalues = np.linalg.eigvalsh(sqrt_cov1 @ cov2 @ sqrt_cov1)
  trace_sqrt = np.sum(np.sqrt(np.clip(product_eigenvalues, 0, None)))
  return float(np.sum((mean1 - mean2) ** 2) + np.trace(cov1) +
               np.trace(cov2) - 2 * trace_sqrt)


def evaluate(generator, g_state, classifier, z, labels, real_features):
  """Generates a digit of class `labels[i]` from each `z[i]`; returns the
  digits and {'class_accuracy', 'frechet_distance' (to real_features)}."""
  images = np.asarray(generate(generator, g_state, z, labels))
  features, predicted = classifier_features(classifier, images)
  return images, {
      'class_accuracy': float(np.mean(predicted == labels)),
      'frechet_distance': frechet_distance(features, real_features)}


def train_epoch(g_optimizer, d_optimizer, g_state, train_ds, batch_size,
                rng):
  """One pass over the shuffled training digits (the last partial batch is
  dropped); returns the optimizers, the state and the mean losses."""
  perm_rng, noise_rng = jax.random.split(rng)
  size = len(train_ds['image'])
  steps = size // batch_size
  perms = np.asarray(jax.random.permutation(perm_rng, size))
  perms = perms[:steps * batch_size].reshape((steps, batch_size))
  batch_metrics = []
  for i, perm in enumerate(perms):
    batch = {k: v[perm] for k, v in train_ds.items()}
    g_optimizer, d_optimizer, g_state, metrics = train_step(
        g_optimizer, d_optimizer, g_state, batch,
        jax.random.fold_in(noise_rng, i))
    batch_metrics.append(metrics)
  batch_metrics = jax.device_get(batch_metrics)
  return g_optimizer, d_optimizer, g_state, {
      k: float(np.mean([m[k] for m in batch_metrics]))
      for k in batch_metrics[0]}


def save_grid(path, images, columns, scale=2):
  """[n, 28, 28, 1] images in [0, 1] as one grey PNG, `columns` per row."""
  from matplotlib import image as mpimg  # pylint: disable=g-import-not-at-top
  images = np.asarray(images)[..., 0]
  n, h, w = images.shape
  grid = images.reshape(n // columns, columns, h, w).transpose(0, 2, 1, 3)
  grid = np.kron(grid.reshape(n // columns * h, columns * w),
                 np.ones((scale, scale)))
  mpimg.imsave(path, np.clip(grid, 0, 1), cmap='gray', vmin=0., vmax=1.)


def train(train_ds: Dict[str, np.ndarray], test_ds: Dict[str, np.ndarray],
          classifier: nn.Model, *, workdir: Optional[str], latents: int,
          learning_rate: float, beta1: float, batch_size: int,
          num_epochs: int, seed: int,
          samples_per_class: int = 100) -> Dict[str, Any]:
  """Trains both networks, measuring sample quality with `classifier` after
  every epoch on `samples_per_class` digits per class (fixed noise); resumes
  from `workdir` if it holds a checkpoint. Writes to `workdir` (when given):
  a checkpoint per epoch, `metrics.jsonl`, `curves.png` and
  `samples_<epoch>.png` (a row per class).

  Returns:
    {'g_optimizer', 'd_optimizer', 'g_state', 'train': last losses, 'test':
     last sample metrics (None if no epoch was left to run), 'reference':
     the classifier on real test digits, 'epochs_run', 'seconds_per_epoch'}.
  """
  rng = jax.random.PRNGKey(seed)
  rng, init_rng, eval_rng = jax.random.split(rng, 3)
  generator, g_state, discriminator = create_models(init_rng, latents)
  g_optimizer, d_optimizer = create_optimizers(generator, discriminator,
                                               learning_rate, beta1)
  steps_per_epoch = len(train_ds['image']) // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {batch_size} is larger than the training '
                     f'set ({len(train_ds["image"])} examples)')
  # Fixed noise for the per-epoch samples: samples_per_class of each class.
  eval_labels = np.repeat(np.arange(models.NUM_CLASSES, dtype=np.int32),
                          samples_per_class)
  eval_z = jax.random.normal(eval_rng, (len(eval_labels), latents))
  real_features, real_predicted = classifier_features(classifier,
                                                      test_ds['image'])
  reference = {'class_accuracy': float(np.mean(real_predicted ==
                                               test_ds['label']))}
  first_epoch, jsonl = 1, None
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    state = checkpoints.restore_checkpoint(
        workdir, {'generator': g_optimizer, 'discriminator': d_optimizer,
                  'batch_stats': g_state})
    g_optimizer, d_optimizer = state['generator'], state['discriminator']
    g_state = state['batch_stats']
    first_epoch = int(g_optimizer.state.step) // steps_per_epoch + 1
    jsonl = JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))
  result = {'train': None, 'test': None, 'reference': reference,
            'epochs_run': 0, 'seconds_per_epoch': None}
  epoch_times = []
  for epoch in range(first_epoch, num_epochs + 1):
    start = time.perf_counter()
    g_optimizer, d_optimizer, g_state, train_metrics = train_epoch(
        g_optimizer, d_optimizer, g_state, train_ds, batch_size,
        jax.random.fold_in(rng, epoch))
    images, test_metrics = evaluate(g_optimizer.target, g_state, classifier,
                                    eval_z, eval_labels, real_features)
    epoch_times.append(time.perf_counter() - start)
    print(f'epoch {epoch}: generator loss {train_metrics["g_loss"]:.3f}, '
          f'discriminator loss {train_metrics["d_loss"]:.3f}; class accuracy '
          f'{test_metrics["class_accuracy"] * 100:.1f}%, Frechet distance '
          f'{test_metrics["frechet_distance"]:.2f} '
          f'({epoch_times[-1]:.1f}s)', flush=True)
    if workdir:
      checkpoints.save_checkpoint(
          workdir, {'generator': g_optimizer, 'discriminator': d_optimizer,
                    'batch_stats': g_state}, epoch, keep=2)
      step = epoch * steps_per_epoch
      jsonl.write(step, split='train', epoch=epoch, **train_metrics)
      jsonl.write(step, split='samples', epoch=epoch, **test_metrics)
      first_ten = images.reshape((10, samples_per_class, 28, 28, 1))[:, :10]
      save_grid(os.path.join(workdir, f'samples_{epoch}.png'),
                first_ten.reshape((-1, 28, 28, 1)), 10)
    result.update(train=train_metrics, test=test_metrics,
                  epochs_run=result['epochs_run'] + 1)
  if workdir:
    jsonl.close()
    if result['epochs_run']:
      plot_curves(os.path.join(workdir, 'metrics.jsonl'),
                  os.path.join(workdir, 'curves.png'),
                  metrics=('g_loss', 'd_loss', 'class_accuracy',
                           'frechet_distance'))
  if epoch_times:
    result['seconds_per_epoch'] = float(np.median(epoch_times))
  result.update(g_optimizer=g_optimizer, d_optimizer=d_optimizer,
                g_state=g_state)
  return result
