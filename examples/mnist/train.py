"""MNIST classifier: the 2020 flax example on flaxish.

A CNN trained with Momentum SGD, data-parallel over every device of every
process: `parallel='jit'` replicates the optimizer over a `Mesh` and splits
each global batch over it; `parallel='pmap'` is the 2020 way,
`optimizer.replicate()` and `jax.pmap`. On one device both are plain
single-device training. The functions below are meant to be read top to
bottom and forked: `create_model`, `create_optimizer`, `train_step`,
`p_train_step`, `eval_step`, `train_epoch`, `eval_model`,
`create_learning_rate_fn`, `train`.
"""
import functools
import os
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from flaxish import distributed
from flaxish import jax_utils
from flaxish import nn
from flaxish import optim
from flaxish.metrics import JsonlWriter, SummaryWriter, plot_curves
from flaxish.training import checkpoints
from flaxish.training import common_utils
from flaxish.training import lr_schedule
from flaxish.training.progress import ProgressBar


class CNN(nn.Module):
  """Conv32-relu-avgpool-Conv64-relu-avgpool-Dense256-relu-Dense10-log_softmax.

  Input: float32 [batch, 28, 28, 1]. Output: log-probabilities [batch, 10].
  """

  def apply(self, x):
    x = nn.Conv(x, features=32, kernel_size=(3, 3))
    x = nn.relu(x)
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nn.Conv(x, features=64, kernel_size=(3, 3))
    x = nn.relu(x)
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(x, features=256)
    x = nn.relu(x)
    x = nn.Dense(x, features=10)
    x = nn.log_softmax(x)
    return x


def create_model(key):
  _, initial_params = CNN.init_by_shape(key, [((1, 28, 28, 1), jnp.float32)])
  return nn.Model(CNN, initial_params)


def create_optimizer(model, learning_rate, beta):
  optimizer_def = optim.Momentum(learning_rate=learning_rate, beta=beta)
  return optimizer_def.create(model)


def onehot(labels, num_classes=10):
  x = (labels[..., None] == jnp.arange(num_classes)[None])
  return x.astype(jnp.float32)


def cross_entropy_loss(logits, labels):
  return -jnp.mean(jnp.sum(onehot(labels) * logits, axis=-1))


def compute_metrics(logits, labels):
  loss = cross_entropy_loss(logits, labels)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return {'loss': loss, 'accuracy': accuracy}


@functools.partial(jax.jit, static_argnums=(2,), donate_argnums=(0,))
def train_step(optimizer, batch, learning_rate_fn):
  """One SGD step on `batch` at the learning rate `learning_rate_fn(step)`;
  the old optimizer's buffers are donated."""
  def loss_fn(model):
    logits = model(batch['image'])
    loss = cross_entropy_loss(logits, batch['label'])
    return loss, logits
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, logits), grad = grad_fn(optimizer.target)
  learning_rate = learning_rate_fn(optimizer.state.step)
  optimizer = optimizer.apply_gradient(grad, learning_rate=learning_rate)
  metrics = compute_metrics(logits, batch['label'])
  metrics['learning_rate'] = learning_rate
  return optimizer, metrics


@functools.partial(jax.pmap, axis_name='batch',
                   static_broadcasted_argnums=(2,), donate_argnums=(0,))
def p_train_step(optimizer, batch, learning_rate_fn):
  """`train_step` on each device's part of the batch `[devices, b, ...]`,
  for a `replicate()`d optimizer: its `apply_gradient` averages the
  gradients over all devices of all processes; the metrics are averaged
  too."""
  optimizer, metrics = train_step(optimizer, batch, learning_rate_fn)
  return optimizer, jax.lax.pmean(metrics, axis_name='batch')


@jax.jit
def eval_step(model, batch):
  logits = model(batch['image'])
  return compute_metrics(logits, batch['label'])


def train_epoch(optimizer, train_ds, batch_size, epoch, rng,
                learning_rate_fn, mesh=None):
  """One pass over the shuffled training set (the last partial batch is
  dropped). Returns the optimizer and the epoch's mean metrics.

  `batch_size` is global. Every process draws the same batches and feeds
  only its own rows of each: to `p_train_step` if the optimizer is
  `replicate()`d (pmap), else as a global batch split over `mesh` (jit).
  """
  train_ds_size = len(train_ds['image'])
  steps_per_epoch = train_ds_size // batch_size
  perms = jax.random.permutation(rng, train_ds_size)
  perms = np.asarray(perms[:steps_per_epoch * batch_size])
  perms = perms.reshape((steps_per_epoch, batch_size))
  rows = distributed.process_slice(batch_size)  # this process's rows
  batch_metrics = []
  bar = ProgressBar(steps_per_epoch, desc=f'epoch {epoch}')
  for perm in perms:
    batch = {k: v[perm[rows]] for k, v in train_ds.items()}
    if optimizer.is_replicated():
      optimizer, metrics = p_train_step(optimizer, common_utils.shard(batch),
                                        learning_rate_fn)
      metrics = jax_utils.unreplicate(metrics)  # the same on every device
    else:
      optimizer, metrics = train_step(
          optimizer, distributed.global_batch(batch, mesh), learning_rate_fn)
    batch_metrics.append(metrics)
    bar.update(loss=metrics['loss'])  # waits for the step: honest steps/s
  bar.close()
  batch_metrics = jax.device_get(batch_metrics)
  epoch_metrics = {k: float(np.mean([m[k] for m in batch_metrics]))
                   for k in batch_metrics[0]}
  return optimizer, epoch_metrics


def one_copy(optimizer):
  """The optimizer on a single device: the first copy of a `replicate()`d
  one, or this process's first copy of one replicated over a mesh."""
  if optimizer.is_replicated():
    return optimizer.unreplicate()
  return jax.tree_util.tree_map(lambda x: x.addressable_data(0), optimizer)


def eval_model(model, test_ds, batch_size=1000):
  """Loss and accuracy over the whole test set, in batches."""
  size = len(test_ds['label'])
  totals = {'loss': 0., 'accuracy': 0.}
  for start in range(0, size, batch_size):
    batch = {k: v[start:start + batch_size] for k, v in test_ds.items()}
    metrics = jax.device_get(eval_step(model, batch))
    for k in totals:
      totals[k] += float(metrics[k]) * len(batch['label'])
  return {k: v / size for k, v in totals.items()}


def create_learning_rate_fn(schedule, learning_rate, steps_per_epoch,
                            num_epochs, warmup_epochs=0.):
  """`step -> learning rate`: 'constant' (`learning_rate`, as in 2020) or
  'cosine' (half a cosine from `learning_rate` down to 0 after `num_epochs`),
  times a linear ramp from 0 over the first `warmup_epochs` (0: none)."""
  if schedule == 'constant':
    return lr_schedule.create_constant_learning_rate_schedule(
        learning_rate, steps_per_epoch, warmup_length=warmup_epochs)
  if schedule == 'cosine':
    return lr_schedule.create_cosine_learning_rate_schedule(
        learning_rate, steps_per_epoch, halfcos_epochs=num_epochs,
        warmup_length=warmup_epochs)
  raise ValueError(f"schedule must be 'constant' or 'cosine', got "
                   f'{schedule!r}')


def train(train_ds: Dict[str, np.ndarray], test_ds: Dict[str, np.ndarray], *,
          workdir: Optional[str], learning_rate: float, momentum: float,
          batch_size: int, num_epochs: int, seed: int,
          schedule: str = 'constant', warmup_epochs: float = 0.,
          parallel: str = 'jit') -> Dict[str, Any]:
  """Trains, evaluating every epoch; resumes from `workdir` if it holds a
  checkpoint. Writes to `workdir` (when given): a checkpoint per epoch,
  `metrics.jsonl`, TensorBoard events under `tensorboard/`, `curves.png`.

  Data-parallel over `jax.devices()`, the devices of every process after
  `distributed.initialize()`: `parallel` is 'jit' (the optimizer replicated
  over a `Mesh`, each batch split over it) or 'pmap' (`optimizer.replicate()`
  and `p_train_step`). `batch_size` is the global batch, a multiple of
  `jax.device_count()`. Every process calls `train` with the same arguments;
  process 0 writes to `workdir`, and every process resumes from it.

  The learning rate follows `create_learning_rate_fn(schedule, ...)`: with
  'cosine' it spans `num_epochs`, so resume a run with the same
  `num_epochs`.

  Returns:
    {'optimizer', 'train': last train metrics, 'test': last test metrics,
     'epochs_run', 'seconds_per_epoch'}.
  """
  rng = jax.random.PRNGKey(seed)
  rng, init_rng = jax.random.split(rng)
  model = create_model(init_rng)
  optimizer = create_optimizer(model, learning_rate, momentum)
  steps_per_epoch = len(train_ds['image']) // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {batch_size} is larger than the training '
                     f'set ({len(train_ds["image"])} examples)')
  if batch_size % jax.device_count():
    raise ValueError(f'batch_size {batch_size} must be a multiple of the '
                     f'number of devices ({jax.device_count()})')
  learning_rate_fn = create_learning_rate_fn(
      schedule, learning_rate, steps_per_epoch, num_epochs, warmup_epochs)
  first_epoch = 1
  jsonl = summary_writer = None
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    optimizer = checkpoints.restore_checkpoint(workdir, optimizer)
    first_epoch = int(optimizer.state.step) // steps_per_epoch + 1
    if first_epoch > 1:
      print(f'Resuming from {workdir} after epoch {first_epoch - 1}')
  writing = workdir and jax.process_index() == 0
  if writing:
    jsonl = JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))
    summary_writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))
  mesh = None
  if parallel == 'jit':  # one copy on every device of every process
    mesh = distributed.data_parallel_mesh()
    optimizer = distributed.replicate_on_mesh(optimizer, mesh)
  elif parallel == 'pmap':  # one copy per local device
    optimizer = optimizer.replicate()
  else:
    raise ValueError(f"parallel must be 'jit' or 'pmap', got {parallel!r}")

  result = {'train': None, 'test': None, 'epochs_run': 0,
            'seconds_per_epoch': None}
  epoch_times = []
  for epoch in range(first_epoch, num_epochs + 1):
    start = time.perf_counter()
    optimizer, train_metrics = train_epoch(
        optimizer, train_ds, batch_size, epoch, jax.random.fold_in(rng, epoch),
        learning_rate_fn, mesh)
    test_metrics = eval_model(one_copy(optimizer).target, test_ds)
    epoch_times.append(time.perf_counter() - start)
    print(f'epoch {epoch}: train loss {train_metrics["loss"]:.4f} '
          f'accuracy {train_metrics["accuracy"] * 100:.2f}%, test loss '
          f'{test_metrics["loss"]:.4f} accuracy '
          f'{test_metrics["accuracy"] * 100:.2f}% '
          f'({epoch_times[-1]:.1f}s)', flush=True)
    if workdir:  # every process calls it; process 0 writes
      checkpoints.save_checkpoint(workdir, optimizer, epoch, keep=2)
    if writing:
      step = epoch * steps_per_epoch
      for split, metrics in (('train', train_metrics), ('test', test_metrics)):
        jsonl.write(step, split=split, epoch=epoch, **metrics)
        for name, value in metrics.items():
          summary_writer.scalar(f'{split}_{name}', value, step)
      summary_writer.flush()
    result.update(train=train_metrics, test=test_metrics,
                  epochs_run=result['epochs_run'] + 1)
  if writing:
    jsonl.close()
    summary_writer.close()
    plot_curves(os.path.join(workdir, 'metrics.jsonl'),
                os.path.join(workdir, 'curves.png'))
  if epoch_times:
    result['seconds_per_epoch'] = float(np.median(epoch_times))
  result['optimizer'] = (optimizer.unreplicate() if optimizer.is_replicated()
                         else optimizer)
  return result
