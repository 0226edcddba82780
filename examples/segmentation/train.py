"""Semantic segmentation with a small U-Net, with the 2020 flax.nn API.

Adam minimizes the per-pixel cross-entropy; BatchNorm statistics are an
`nn.stateful` collection next to the optimizer. Evaluation accumulates a
confusion matrix over the test set, from which come the pixel accuracy and
the mean intersection-over-union (mIoU) over the classes. Read top to bottom
and fork: `create_model`, `create_optimizer`, `cross_entropy_loss`,
`train_step`, `eval_step`, `segmentation_metrics`, `train_epoch`,
`evaluate`, `trivial_baseline`, `save_predictions`, `train`.
"""
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from examples.segmentation import models
from flaxish import nn
from flaxish import optim
from flaxish.metrics import JsonlWriter, plot_curves
from flaxish.training import checkpoints


def create_model(key, image_shape, num_classes, features):
  """(Model, its batch_stats Collection) for images of `image_shape`
  (h, w, channels)."""
  module = models.UNet.partial(num_classes=num_classes, features=features)
  with nn.stateful() as batch_stats:
    _, params = module.init_by_shape(key, [((1,) + tuple(image_shape),
                                            jnp.float32)])
  return nn.Model(module, params), batch_stats


def create_optimizer(model, learning_rate):
  return optim.Adam(learning_rate=learning_rate).create(model)


def cross_entropy_loss(logits, masks):
  """Mean over pixels of -log softmax(logits)[true class]."""
  log_probs = nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(log_probs, masks[..., None], -1))


@jax.jit
def train_step(optimizer, batch_stats, batch):
  """One Adam step; returns (optimizer, batch_stats, metrics)."""
  def loss_fn(model):
    with nn.stateful(batch_stats) as new_batch_stats:
      logits = model(batch['image'])
    loss = cross_entropy_loss(logits, batch['mask'])
    return loss, (logits, new_batch_stats)
  (loss, (logits, batch_stats)), grad = jax.value_and_grad(
      loss_fn, has_aux=True)(optimizer.target)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['mask'])
  return (optimizer.apply_gradient(grad), batch_stats,
          {'loss': loss, 'pixel_accuracy': accuracy})


@jax.jit
def eval_step(model, batch_stats, images):
  """(predicted classes [b, h, w], logits), with the running statistics."""
  with nn.stateful(batch_stats, mutable=False):
    logits = model(images, train=False)
  return jnp.argmax(logits, -1), logits


def confusion_matrix(truth, predicted, num_classes):
  """[num_classes, num_classes] pixel counts: row = true class, column =
  predicted class."""
  index = (np.asarray(truth).ravel().astype(np.int64) * num_classes +
           np.asarray(predicted).ravel())
  return np.bincount(index, minlength=num_classes ** 2).reshape(
      (num_classes, num_classes))


def segmentation_metrics(confusion):
  """{'pixel_accuracy', 'mean_iou'} of a confusion matrix. The IoU of a
  class is TP / (TP + FP + FN); the mean is over the classes present in the
  truth or the prediction."""
  confusion = np.asarray(confusion, np.float64)
  true_positives = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - true_positives
  present = union > 0
  return {'pixel_accuracy': float(true_positives.sum() / confusion.sum()),
          'mean_iou': float(np.mean(true_positives[present] /
                                    union[present]))}


def evaluate(model, batch_stats, test_ds, num_classes, batch_size=100):
  """Test loss, pixel accuracy and mean IoU over the whole test set."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  loss = 0.
  for start in range(0, len(test_ds['image']), batch_size):
    images = test_ds['image'][start:start + batch_size]
    masks = test_ds['mask'][start:start + batch_size]
    predicted, logits = eval_step(model, batch_stats, images)
    loss += float(cross_entropy_loss(logits, masks)) * len(images)
    confusion += confusion_matrix(masks, predicted, num_classes)
  return dict(segmentation_metrics(confusion),
              loss=loss / len(test_ds['image']))


def trivial_baseline(train_ds, test_ds, num_classes):
  """The metrics of predicting the most frequent training class (for the
  digit canvases: background) for every test pixel."""
  most_frequent = np.argmax(np.bincount(train_ds['mask'].ravel(),
                                        minlength=num_classes))
  return segmentation_metrics(confusion_matrix(
      test_ds['mask'], np.full(test_ds['mask'].shape, most_frequent),
      num_classes))


def train_epoch(optimizer, batch_stats, train_ds, batch_size, rng):
  """One pass over the shuffled training set (the last partial batch is
  dropped); returns the optimizer, the statistics and the mean metrics."""
  size = len(train_ds['image'])
  steps = size // batch_size
  perms = np.asarray(jax.random.permutation(rng, size))
  perms = perms[:steps * batch_size].reshape((steps, batch_size))
  batch_metrics = []
  for perm in perms:
    batch = {k: v[perm] for k, v in train_ds.items()}
    optimizer, batch_stats, metrics = train_step(optimizer, batch_stats,
                                                 batch)
    batch_metrics.append(metrics)
  batch_metrics = jax.device_get(batch_metrics)
  return optimizer, batch_stats, {k: float(np.mean([m[k] for m in
                                                    batch_metrics]))
                                  for k in batch_metrics[0]}


def colorize(masks):
  """Class masks [..., h, w] -> RGB [..., h, w, 3] in [0, 1]; class 0 black."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  palette = colormaps['tab20'](np.linspace(0, 1, 20))[:, :3]
  palette = np.concatenate([np.zeros((1, 3)), palette[::2], palette[1::2]])
  return palette[np.asarray(masks) % len(palette)]


def save_predictions(path, model, batch_stats, test_ds, num=6, scale=2):
  """A PNG with a row per test image: input, truth, prediction."""
  from matplotlib import image as mpimg  # pylint: disable=g-import-not-at-top
  images = test_ds['image'][:num]
  predicted, _ = eval_step(model, batch_stats, images)
  inputs = np.broadcast_to(images, images.shape[:3] + (3,)) if (
      images.shape[-1] == 1) else images
  rows = [np.concatenate([inputs[i], colorize(test_ds['mask'][i]),
                          colorize(predicted[i])], 1)
          for i in range(num)]
  grid = np.kron(np.concatenate(rows, 0), np.ones((scale, scale, 1)))
  mpimg.imsave(path, np.clip(grid, 0, 1))


def train(train_ds: Dict[str, np.ndarray], test_ds: Dict[str, np.ndarray], *,
          workdir: Optional[str], num_classes: int, features: int,
          learning_rate: float, batch_size: int, num_epochs: int,
          seed: int) -> Dict[str, Any]:
  """Trains, evaluating every epoch; resumes from `workdir` if it holds a
  checkpoint. Writes to `workdir` (when given): a checkpoint per epoch,
  `metrics.jsonl`, `curves.png` and `predictions.png`.

  Returns:
    {'optimizer', 'batch_stats', 'train': last train metrics, 'test': last
     test metrics (None if no epoch was left to run), 'baseline': the
     `trivial_baseline`, 'epochs_run', 'seconds_per_epoch'}.
  """
  rng, init_rng = jax.random.split(jax.random.PRNGKey(seed))
  model, batch_stats = create_model(init_rng, train_ds['image'].shape[1:],
                                    num_classes, features)
  optimizer = create_optimizer(model, learning_rate)
  steps_per_epoch = len(train_ds['image']) // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {batch_size} is larger than the training '
                     f'set ({len(train_ds["image"])} examples)')
  first_epoch, jsonl = 1, None
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    state = checkpoints.restore_checkpoint(
        workdir, {'optimizer': optimizer, 'batch_stats': batch_stats})
    optimizer, batch_stats = state['optimizer'], state['batch_stats']
    first_epoch = int(optimizer.state.step) // steps_per_epoch + 1
    jsonl = JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))
  result = {'train': None, 'test': None, 'epochs_run': 0,
            'baseline': trivial_baseline(train_ds, test_ds, num_classes),
            'seconds_per_epoch': None}
  epoch_times = []
  for epoch in range(first_epoch, num_epochs + 1):
    start = time.perf_counter()
    optimizer, batch_stats, train_metrics = train_epoch(
        optimizer, batch_stats, train_ds, batch_size,
        jax.random.fold_in(rng, epoch))
    test_metrics = evaluate(optimizer.target, batch_stats, test_ds,
                            num_classes)
    epoch_times.append(time.perf_counter() - start)
    print(f'epoch {epoch}: train loss {train_metrics["loss"]:.4f}, test '
          f'loss {test_metrics["loss"]:.4f}, pixel accuracy '
          f'{test_metrics["pixel_accuracy"] * 100:.2f}%, mean IoU '
          f'{test_metrics["mean_iou"]:.3f} ({epoch_times[-1]:.1f}s)',
          flush=True)
    if workdir:
      checkpoints.save_checkpoint(
          workdir, {'optimizer': optimizer, 'batch_stats': batch_stats},
          epoch, keep=2)
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
                  metrics=('loss', 'pixel_accuracy', 'mean_iou'))
      save_predictions(os.path.join(workdir, 'predictions.png'),
                       optimizer.target, batch_stats, test_ds)
  if epoch_times:
    result['seconds_per_epoch'] = float(np.median(epoch_times))
  result.update(optimizer=optimizer, batch_stats=batch_stats)
  return result
