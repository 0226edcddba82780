"""Convolutional VAE on MNIST digits, with the 2020 flax.nn API.

The reparameterization trick draws its noise from `nn.make_rng()` inside
`nn.stochastic(rng)`; Adam optimizes the negative ELBO, a Bernoulli
reconstruction term plus the KL divergence of the approximate posterior from
the N(0, I) prior, both in nats per image. Read top to bottom and fork:
`create_model`, `create_optimizer`, `kl_divergence`,
`binary_cross_entropy_with_logits`, `train_step`, `eval_step`,
`train_epoch`, `evaluate`, `decode`, `sample`, `save_pictures`, `train`.
"""
import functools
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from examples.vae import input_pipeline
from examples.vae import models
from flaxish import nn
from flaxish import optim
from flaxish.metrics import JsonlWriter, plot_curves
from flaxish.training import checkpoints


def create_model(key, latents):
  module = models.VAE.partial(latents=latents)
  with nn.stochastic(key):
    _, params = module.init_by_shape(key, [((1, 28, 28, 1), jnp.float32)])
  return nn.Model(module, params)


def create_optimizer(model, learning_rate):
  return optim.Adam(learning_rate=learning_rate).create(model)


def kl_divergence(mean, logvar):
  """KL(N(mean, exp(logvar)) || N(0, I)) per example: [batch, latents] ->
  [batch]."""
  return -0.5 * jnp.sum(1 + logvar - jnp.square(mean) - jnp.exp(logvar), -1)


def binary_cross_entropy_with_logits(logits, labels):
  """-log p(labels | logits) of independent Bernoulli pixels, summed per
  example: [batch, ...] -> [batch]."""
  logits = logits.reshape((logits.shape[0], -1))
  labels = labels.reshape((labels.shape[0], -1))
  return -jnp.sum(labels * nn.log_sigmoid(logits) +
                  (1 - labels) * nn.log_sigmoid(-logits), -1)


def compute_metrics(logits, images, mean, logvar):
  """Means over the batch, in nats per image; `elbo = -(recon + kl)`."""
  recon = jnp.mean(binary_cross_entropy_with_logits(logits, images))
  kl = jnp.mean(kl_divergence(mean, logvar))
  return {'elbo': -(recon + kl), 'recon': recon, 'kl': kl}


@jax.jit
def train_step(optimizer, images, rng):
  """One Adam step on the negative ELBO of `images` [batch, 28, 28, 1]."""
  def loss_fn(model):
    with nn.stochastic(rng):
      logits, mean, logvar = model(images)
    metrics = compute_metrics(logits, images, mean, logvar)
    return -metrics['elbo'], metrics
  grad, metrics = jax.grad(loss_fn, has_aux=True)(optimizer.target)
  return optimizer.apply_gradient(grad), metrics


@jax.jit
def eval_step(model, images, rng):
  with nn.stochastic(rng):
    logits, mean, logvar = model(images)
  return compute_metrics(logits, images, mean, logvar)


def train_epoch(optimizer, train_ds, batch_size, rng):
  """One pass over the shuffled, freshly binarized training images (the
  last partial batch is dropped). Returns the optimizer and mean metrics."""
  perm_rng, data_seed, step_rng = jax.random.split(rng, 3)
  size = len(train_ds['image'])
  steps = size // batch_size
  perms = np.asarray(jax.random.permutation(perm_rng, size))
  perms = perms[:steps * batch_size].reshape((steps, batch_size))
  data_rng = np.random.default_rng(np.asarray(
      jax.random.key_data(data_seed)).ravel())
  batch_metrics = []
  for i, perm in enumerate(perms):
    images = input_pipeline.binarize(train_ds['image'][perm], data_rng)
    optimizer, metrics = train_step(optimizer, images,
                                    jax.random.fold_in(step_rng, i))
    batch_metrics.append(metrics)
  batch_metrics = jax.device_get(batch_metrics)
  return optimizer, {k: float(np.mean([m[k] for m in batch_metrics]))
                     for k in batch_metrics[0]}


def evaluate(model, test_ds, rng, batch_size=500):
  """ELBO and its parts over the test images, one posterior sample each
  (drawn from `rng`), in nats per image."""
  size = len(test_ds['image'])
  totals = {'elbo': 0., 'recon': 0., 'kl': 0.}
  for start in range(0, size, batch_size):
    images = test_ds['image'][start:start + batch_size]
    metrics = jax.device_get(eval_step(model, images,
                                       jax.random.fold_in(rng, start)))
    for k in totals:
      totals[k] += float(metrics[k]) * len(images)
  return {k: v / size for k, v in totals.items()}


@jax.jit
def decode(model, z):
  """Pixel probabilities [batch, 28, 28, 1] for latent codes z."""
  return model.generate(z)


def sample(model, rng, num):
  """`num` images [num, 28, 28, 1] (pixel probabilities) decoded from
  latent codes drawn from the N(0, I) prior with `rng`."""
  latents = model.params['decoder']['Dense_0']['kernel'].shape[0]
  return decode(model, jax.random.normal(rng, (num, latents)))


def image_grid(images, columns):
  """[n, h, w, 1] images in [0, 1] -> one [rows * h, columns * w] image."""
  images = np.asarray(images)[..., 0]
  n, h, w = images.shape
  rows = -(-n // columns)
  images = np.concatenate([images, np.zeros((rows * columns - n, h, w))])
  return images.reshape(rows, columns, h, w).transpose(0, 2, 1, 3).reshape(
      rows * h, columns * w)


def save_png(path, image, scale=2):
  """A grey image in [0, 1], each pixel `scale` x `scale`, as a PNG."""
  from matplotlib import image as mpimg  # pylint: disable=g-import-not-at-top
  image = np.kron(np.clip(image, 0, 1), np.ones((scale, scale)))
  mpimg.imsave(path, image, cmap='gray', vmin=0., vmax=1.)


def save_pictures(model, test_ds, workdir, rng):
  """reconstructions.png (test digits, odd rows, above their
  reconstructions), samples.png (64 prior samples) and, for 2 latents,
  latent_space.png (test posterior means by class, and the decoded grid)."""
  images = test_ds['image'][:32]
  with nn.stochastic(rng):
    logits, _, _ = model(images)
  pairs = np.stack([images, np.asarray(nn.sigmoid(logits))], 1)  # [32, 2,..]
  pairs = pairs.reshape((4, 8, 2, 28, 28, 1)).transpose(0, 2, 1, 3, 4, 5)
  save_png(os.path.join(workdir, 'reconstructions.png'),
           image_grid(pairs.reshape((64, 28, 28, 1)), 8))
  save_png(os.path.join(workdir, 'samples.png'),
           image_grid(sample(model, rng, 64), 8))
  if model.params['encoder']['mean']['kernel'].shape[-1] == 2:
    save_latent_plot(model, test_ds, os.path.join(workdir, 'latent_space.png'))


def save_latent_plot(model, test_ds, path, span=2.5, steps=15):
  """Left: the posterior means of the test digits, colored by class. Right:
  the decoder's images on a `steps` x `steps` grid of z in [-span, span]^2."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  encode = jax.jit(functools.partial(models.Encoder.call, latents=2))
  means = np.asarray(encode(model.params['encoder'], test_ds['image'])[0])
  ticks = np.linspace(-span, span, steps)
  z = np.stack(np.meshgrid(ticks, -ticks), -1).reshape((-1, 2))
  decoded = image_grid(decode(model, jnp.asarray(z, jnp.float32)), steps)
  fig = Figure(figsize=(10, 5), dpi=80)
  left, right = fig.subplots(1, 2)
  points = left.scatter(means[:, 0], means[:, 1], c=test_ds['label'], s=4,
                        cmap='tab10', vmin=-0.5, vmax=9.5)
  fig.colorbar(points, ax=left, ticks=range(10))
  left.set(xlim=(-span * 1.4, span * 1.4), ylim=(-span * 1.4, span * 1.4),
           title='test digits: posterior means', xlabel='z1', ylabel='z2')
  right.imshow(decoded, cmap='gray', extent=(-span, span, -span, span))
  right.set(title='decoded z grid', xlabel='z1', ylabel='z2')
  fig.tight_layout()
  fig.savefig(path)


def train(train_ds: Dict[str, np.ndarray], test_ds: Dict[str, np.ndarray], *,
          workdir: Optional[str], latents: int, learning_rate: float,
          batch_size: int, num_epochs: int, seed: int) -> Dict[str, Any]:
  """Trains, evaluating the test ELBO every epoch; resumes from `workdir`
  if it holds a checkpoint. Writes to `workdir` (when given): a checkpoint
  per epoch, `metrics.jsonl`, `curves.png` and the pictures of
  `save_pictures`.

  Returns:
    {'optimizer', 'train': last train metrics, 'test': last test metrics
     (None if no epoch was left to run), 'epochs_run', 'seconds_per_epoch'}.
  """
  rng = jax.random.PRNGKey(seed)
  rng, init_rng, eval_rng = jax.random.split(rng, 3)
  optimizer = create_optimizer(create_model(init_rng, latents), learning_rate)
  steps_per_epoch = len(train_ds['image']) // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {batch_size} is larger than the training '
                     f'set ({len(train_ds["image"])} examples)')
  first_epoch, jsonl = 1, None
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    optimizer = checkpoints.restore_checkpoint(workdir, optimizer)
    first_epoch = int(optimizer.state.step) // steps_per_epoch + 1
    jsonl = JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))
  result = {'train': None, 'test': None, 'epochs_run': 0,
            'seconds_per_epoch': None}
  epoch_times = []
  for epoch in range(first_epoch, num_epochs + 1):
    start = time.perf_counter()
    optimizer, train_metrics = train_epoch(
        optimizer, train_ds, batch_size, jax.random.fold_in(rng, epoch))
    test_metrics = evaluate(optimizer.target, test_ds, eval_rng)
    epoch_times.append(time.perf_counter() - start)
    print(f'epoch {epoch}: train ELBO {train_metrics["elbo"]:.2f}, test ELBO '
          f'{test_metrics["elbo"]:.2f} = -(reconstruction '
          f'{test_metrics["recon"]:.2f} + KL {test_metrics["kl"]:.2f}) nats '
          f'({epoch_times[-1]:.1f}s)', flush=True)
    if workdir:
      checkpoints.save_checkpoint(workdir, optimizer, epoch, keep=2)
      for split, metrics in (('train', train_metrics), ('test', test_metrics)):
        jsonl.write(epoch * steps_per_epoch, split=split, epoch=epoch,
                    **metrics)
    result.update(train=train_metrics, test=test_metrics,
                  epochs_run=result['epochs_run'] + 1)
  if workdir:
    jsonl.close()
    if result['epochs_run']:
      plot_curves(os.path.join(workdir, 'metrics.jsonl'),
                  os.path.join(workdir, 'curves.png'),
                  metrics=('elbo', 'recon', 'kl'))
      save_pictures(optimizer.target, test_ds, workdir, eval_rng)
  if epoch_times:
    result['seconds_per_epoch'] = float(np.median(epoch_times))
  result['optimizer'] = optimizer
  return result
