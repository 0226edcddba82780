"""ResNet on ImageNet: the 2020 flax example on flaxish.

Data-parallel training over all devices of all processes, in one of two
styles:

- `parallel='pmap'` (the 2020 example): the train state is replicated on
  every local device, each device takes its share of the batch under
  `jax.pmap(axis_name='batch')`, gradients are averaged with `lax.pmean`.
  BatchNorm normalizes each device's batch with its own statistics (or,
  with `cross_replica_bn`, the statistics of the whole batch); the running
  averages are averaged over the devices before every evaluation and
  checkpoint.
- `parallel='jit'`: one copy of the train state on every device of a
  data-parallel `Mesh`, each batch one global array split over it, and the
  same `train_step` (without the `'batch'` axis) under `jax.jit`; XLA adds
  the all-reduce. BatchNorm then normalizes with the statistics of the
  whole global batch, as `cross_replica_bn` does under pmap.

Nesterov momentum, learning rate 0.1 per 256 images with a linear warmup and
a cosine decay, L2 weight decay on the kernels, optional bfloat16 / float16
compute.

The functions below are meant to be read top to bottom and forked:
`create_model`, `create_train_state`, `train_step`, `eval_step`,
`sync_batch_stats`, `evaluate`, `train_and_evaluate`.
"""
import functools
from importlib import metadata
import itertools
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxish import distributed
from flaxish import jax_utils
from flaxish import nn
from flaxish import optim
from flaxish import struct
from flaxish.metrics import JsonlWriter, SummaryWriter, plot_curves
from flaxish.training import checkpoints
from flaxish.training import common_utils
from flaxish.training.progress import ProgressBar

from examples.imagenet import models


def half_precision_dtype() -> str:
  """float16 on GPUs (with loss scaling), bfloat16 elsewhere (TPU, CPU)."""
  return 'float16' if jax.local_devices()[0].platform == 'gpu' else 'bfloat16'


# XLA:CPU in jaxlib 0.11 and later miscompiles a bfloat16 YNNPACK fusion that
# ends in a reduction: this ResNet's outputs come back NaN. Taking `reduce`
# out of the YNNPACK fusions (in XLA_FLAGS, before JAX starts) avoids it;
# `flaxish.cpu_defaults.apply()` does that on the jaxlib versions it knows.
_YNN_FUSION_FLAG = '--xla_cpu_experimental_ynn_fusion_type'


def _jaxlib_version() -> Tuple[int, int]:
  major, minor = metadata.version('jaxlib').split('.')[:2]
  return int(major), int(minor)


def ynn_reduce_fusion_off(xla_flags: str) -> bool:
  """Whether `xla_flags` takes `reduce` out of XLA:CPU's YNNPACK fusions:
  `-reduce` in the list, or a list of names (no +/- signs) without it."""
  off = False
  for token in xla_flags.split():
    name, _, value = token.partition('=')
    if name == _YNN_FUSION_FLAG:  # the last one counts
      items = value.split(',')
      signed = any(item.startswith(('+', '-')) for item in items)
      off = '-reduce' in items if signed else 'reduce' not in items
  return off


def check_dtype_on_this_backend(dtype: str) -> None:
  """Raises ValueError for bfloat16 on a CPU whose XLA miscompiles it (jaxlib
  0.11 and later, unless XLA_FLAGS takes `reduce` out of YNNPACK fusions)."""
  if (jnp.dtype(dtype) != jnp.bfloat16 or jax.default_backend() != 'cpu' or
      _jaxlib_version() < (0, 11) or
      ynn_reduce_fusion_off(os.environ.get('XLA_FLAGS', ''))):
    return
  raise ValueError(
      f'bfloat16 on CPU: XLA:CPU in jaxlib {metadata.version("jaxlib")} '
      'miscompiles a bfloat16 YNNPACK fusion ending in a reduction (this '
      'ResNet computes NaN). Call `from flaxish import cpu_defaults; '
      'cpu_defaults.apply()` at the top of the script, before JAX starts '
      '(main.py does), or start it with XLA_FLAGS='
      f'{_YNN_FUSION_FLAG}=-reduce; or compute in float32.')


def create_model(key, model_name: str, num_classes: int, image_size: int,
                 dtype: str = 'float32', cross_replica_bn: bool = False):
  """A ResNet `nn.Model` (float32 params) and its BatchNorm state.

  Raises ValueError for bfloat16 on a CPU that would miscompile it (see
  `check_dtype_on_this_backend`)."""
  check_dtype_on_this_backend(dtype)
  model_def = models.MODELS[model_name].partial(
      num_classes=num_classes, dtype=jnp.dtype(dtype),
      axis_name='batch' if cross_replica_bn else None)
  input_shape = (1, image_size, image_size, 3)
  with nn.stateful() as model_state:
    _, params = model_def.init_by_shape(key, [(input_shape, jnp.float32)])
  return nn.Model(model_def, params), model_state


@struct.dataclass
class TrainState:
  """Everything a step updates, and everything a checkpoint saves.

  Attributes:
    step: the number of training steps run (float16 steps skipped for an
      overflow count too).
    optimizer: the optimizer, holding the model.
    model_state: the BatchNorm running statistics.
    dynamic_scale: the float16 loss scale, or None.
  """
  step: Any
  optimizer: optim.Optimizer
  model_state: nn.Collection
  dynamic_scale: Optional[optim.DynamicScale] = None


def create_train_state(key, model_name: str, num_classes: int,
                       image_size: int, momentum: float, nesterov: bool,
                       dtype: str = 'float32',
                       cross_replica_bn: bool = False) -> TrainState:
  """Step 0: a new model, (Nesterov) momentum, and loss scaling if float16."""
  model, model_state = create_model(key, model_name, num_classes, image_size,
                                    dtype, cross_replica_bn)
  optimizer = optim.Momentum(beta=momentum, nesterov=nesterov).create(model)
  dynamic_scale = optim.DynamicScale() if dtype == 'float16' else None
  return TrainState(step=0, optimizer=optimizer, model_state=model_state,
                    dynamic_scale=dynamic_scale)


def create_learning_rate_fn(base_learning_rate: float, steps_per_epoch: int,
                            num_epochs: int, warmup_epochs: float = 5):
  """Linear warmup from 0 over `warmup_epochs`, then half a cosine down to 0
  at `num_epochs`."""
  def learning_rate_fn(step):
    epoch = step / steps_per_epoch
    warmup = jnp.minimum(1., epoch / warmup_epochs) if warmup_epochs else 1.
    progress = jnp.clip((epoch - warmup_epochs) /
                        max(num_epochs - warmup_epochs, 1e-9), 0., 1.)
    return base_learning_rate * warmup * 0.5 * (1. + jnp.cos(jnp.pi *
                                                             progress))
  return learning_rate_fn


def compute_metrics(log_probs, labels, weights, axis_name='batch'):
  """Sums over the whole batch (all devices) of the loss, the correct
  predictions and the weights; divide by 'count' for means. Under pmap the
  devices' sums are added over `axis_name`; under jit (`axis_name=None`)
  the batch is already the whole batch."""
  onehot = common_utils.onehot(labels, log_probs.shape[-1])
  losses = -jnp.sum(onehot * log_probs, axis=-1)
  correct = jnp.argmax(log_probs, axis=-1) == labels
  metrics = {'loss': jnp.sum(losses * weights),
             'accuracy': jnp.sum(correct * weights),
             'count': jnp.sum(weights)}
  if axis_name is None:
    return metrics
  return lax.psum(metrics, axis_name=axis_name)


def train_step(state: TrainState, batch, learning_rate_fn: Callable,
               weight_decay: float, axis_name: Optional[str] = 'batch'):
  """One step: on this device's part of the batch under
  `jax.pmap(..., axis_name='batch')`, or on the whole (global) batch under
  `jax.jit` with `axis_name=None`."""
  def loss_fn(model):
    with nn.stateful(state.model_state) as new_model_state:
      log_probs = model(batch['image'])
    onehot = common_utils.onehot(batch['label'], log_probs.shape[-1])
    loss = -jnp.mean(jnp.sum(onehot * log_probs, axis=-1))
    kernels = [p for p in jax.tree_util.tree_leaves(model.params)
               if p.ndim > 1]
    loss += weight_decay * 0.5 * sum(jnp.sum(k ** 2) for k in kernels)
    return loss, (new_model_state, log_probs)

  learning_rate = learning_rate_fn(state.step)
  dynamic_scale = state.dynamic_scale
  if dynamic_scale is not None:
    grad_fn = dynamic_scale.value_and_grad(loss_fn, has_aux=True,
                                           axis_name=axis_name)
    dynamic_scale, is_finite, (_, aux), grad = grad_fn(state.optimizer.target)
  else:
    (_, aux), grad = jax.value_and_grad(loss_fn, has_aux=True)(
        state.optimizer.target)
    if axis_name is not None:
      grad = lax.pmean(grad, axis_name=axis_name)
  new_model_state, log_probs = aux
  new_optimizer = state.optimizer.apply_gradient(grad,
                                                 learning_rate=learning_rate)
  if dynamic_scale is not None:
    # A step whose float16 gradients overflowed changes nothing but the scale.
    keep_if_finite = functools.partial(jnp.where, is_finite)
    new_optimizer = jax.tree_util.tree_map(keep_if_finite, new_optimizer,
                                           state.optimizer)
    new_model_state = jax.tree_util.tree_map(keep_if_finite, new_model_state,
                                             state.model_state)
  new_state = state.replace(step=state.step + 1, optimizer=new_optimizer,
                            model_state=new_model_state,
                            dynamic_scale=dynamic_scale)
  metrics = compute_metrics(log_probs, batch['label'],
                            jnp.ones_like(batch['label'], jnp.float32),
                            axis_name)
  metrics['learning_rate'] = learning_rate
  return new_state, metrics


def eval_step(state: TrainState, batch, axis_name: Optional[str] = 'batch'):
  """Metric sums on one batch, with the running BatchNorm statistics."""
  with nn.stateful(state.model_state, mutable=False):
    log_probs = state.optimizer.target(batch['image'], train=False)
  return compute_metrics(log_probs, batch['label'], batch['mask'], axis_name)


def replicate(state: TrainState) -> TrainState:
  """One copy of `state` per local device, laid out like the outputs of a
  pmap over the axis 'batch': `jax.pmap` compiles once per input layout, so
  this spares compiling `p_train_step` a second time at its second step."""
  return jax.pmap(lambda x: x, axis_name='batch')(jax_utils.replicate(state))


_cross_replica_mean = jax.pmap(lambda x: lax.pmean(x, 'batch'), 'batch')


def sync_batch_stats(state: TrainState) -> TrainState:
  """Averages the BatchNorm running statistics over all devices (of a
  replicated state), so every replica evaluates and saves the same model."""
  return state.replace(model_state=_cross_replica_mean(state.model_state))


def first(x) -> float:
  """A metric as a float: under pmap it has one (equal) copy per device."""
  return float(np.asarray(x).reshape(-1)[0])


def summarize(metric_sums) -> Dict[str, float]:
  """Means from a list of `compute_metrics` outputs."""
  totals = {k: sum(first(m[k]) for m in jax.device_get(metric_sums))
            for k in ('loss', 'accuracy', 'count')}
  return {'loss': totals['loss'] / totals['count'],
          'accuracy': totals['accuracy'] / totals['count']}


def evaluate(p_eval_step, state: TrainState, batches,
             shard: Callable = common_utils.shard) -> Dict[str, float]:
  """Loss and accuracy of a replicated state over an iterator of this
  process's batches, each placed on the devices with `shard`."""
  sums = []
  for i, batch in enumerate(batches):
    sums.append(p_eval_step(state, shard(batch)))
    if i % 16 == 15:
      jax.block_until_ready(sums[-1])
  return summarize(sums)


def save_checkpoint(workdir: str, state: TrainState, keep: int) -> None:
  """Saves one copy of the state (process 0 writes; all processes call
  it)."""
  checkpoints.save_checkpoint(workdir, state, int(state.step), keep=keep,
                              overwrite=True)


def train_and_evaluate(data, *, workdir: Optional[str], model_name: str,
                       batch_size: int, learning_rate: float, momentum: float,
                       nesterov: bool, weight_decay: float,
                       warmup_epochs: float, num_epochs: int,
                       num_train_steps: int = -1, steps_per_eval: int = -1,
                       dtype: str = 'float32', cross_replica_bn: bool = False,
                       log_every_steps: int = 100,
                       checkpoint_every_epochs: int = 10,
                       keep_checkpoints: int = 3,
                       seed: int = 0,
                       parallel: str = 'pmap') -> Dict[str, Any]:
  """Trains on `data` (an `input_pipeline.Dataset`), evaluating after every
  epoch; resumes from the last checkpoint in `workdir`, if any.

  `parallel` is 'pmap' or 'jit' (see the module docstring); `batch_size` is
  the global batch over all devices of all processes. Every process calls
  this with the same arguments.

  Writes to `workdir` (process 0): checkpoints (every
  `checkpoint_every_epochs` epochs and at the end, the newest
  `keep_checkpoints` kept), `metrics.jsonl`, TensorBoard events under
  `tensorboard/`, `curves.png`.

  Returns:
    {'state': the final TrainState (one copy; under jit, replicated on the
     mesh), 'train': the last logged
     training metrics, 'eval': the last evaluation metrics, 'steps_run',
     'steps_per_second' (after the first log interval, which compiles)}.
  """
  if parallel not in ('pmap', 'jit'):
    raise ValueError(f"parallel must be 'pmap' or 'jit', got {parallel!r}")
  steps_per_epoch = data.num_train_examples // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {batch_size} is larger than the training '
                     f'set ({data.num_train_examples} examples)')
  num_steps = (num_train_steps if num_train_steps > 0 else
               num_epochs * steps_per_epoch)
  learning_rate_fn = create_learning_rate_fn(
      learning_rate * batch_size / 256., steps_per_epoch, num_epochs,
      warmup_epochs)

  # Under jit, BatchNorm sees the whole global batch: no 'batch' axis.
  state = create_train_state(jax.random.PRNGKey(seed), model_name,
                             data.num_classes, data.image_size, momentum,
                             nesterov, dtype,
                             cross_replica_bn and parallel == 'pmap')
  if workdir:
    state = checkpoints.restore_checkpoint(workdir, state)
  start_step = int(state.step)
  result = {'state': state, 'train': None, 'eval': None, 'steps_run': 0,
            'steps_per_second': None}
  if start_step >= num_steps:
    return result
  if start_step:
    print(f'Resuming from {workdir} at step {start_step}', flush=True)

  step_fn = functools.partial(train_step, learning_rate_fn=learning_rate_fn,
                              weight_decay=weight_decay)
  if parallel == 'pmap':  # one copy per local device
    state = replicate(state)
    p_train_step = jax.pmap(step_fn, axis_name='batch', donate_argnums=(0,))
    p_eval_step = jax.pmap(eval_step, axis_name='batch')
    shard = common_utils.shard  # [local devices, batch / devices, ...]
    one_copy = jax_utils.unreplicate
    train_iter = jax_utils.prefetch_to_device(
        map(shard, data.train_batches(start_step)), 2)
  else:  # jit: one copy on every device of every process
    mesh = distributed.data_parallel_mesh()
    replicated = distributed.replicated_sharding(mesh)
    batch_sharding = distributed.batch_sharding(mesh)
    state = distributed.replicate_on_mesh(state, mesh)
    p_train_step = jax.jit(functools.partial(step_fn, axis_name=None),
                           in_shardings=(replicated, batch_sharding),
                           out_shardings=replicated, donate_argnums=(0,))
    p_eval_step = jax.jit(functools.partial(eval_step, axis_name=None),
                          in_shardings=(replicated, batch_sharding),
                          out_shardings=replicated)
    shard = functools.partial(distributed.global_batch, mesh=mesh)
    one_copy = lambda state: state
    train_iter = map(shard, data.train_batches(start_step))

  writing = workdir and jax.process_index() == 0
  if writing:
    jsonl = JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))
    summary_writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def log(step, split, metrics):
    epoch = step / steps_per_epoch
    if writing:
      jsonl.write(step, split=split, epoch=epoch, **metrics)
      for name, value in metrics.items():
        summary_writer.scalar(f'{split}_{name}', value, step)
      summary_writer.flush()

  train_sums, bar, previous = [], None, None
  window_start, window_steps, rates = time.perf_counter(), 0, []
  for step in range(start_step, num_steps):
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    if bar is None:
      bar = ProgressBar(min(steps_per_epoch - step_in_epoch, num_steps - step),
                        desc=f'epoch {epoch + 1}')
    state, metrics = p_train_step(state, next(train_iter))
    train_sums.append(metrics)
    # Waiting for the previous step's loss keeps one step queued behind the
    # running one, and stops pmap collectives piling up (that deadlocks).
    if previous is not None:
      bar.update(loss=first(previous['loss']) / first(previous['count']))
    previous = metrics
    window_steps += 1

    done = step + 1
    if done % log_every_steps == 0 or done == num_steps:
      train_metrics = summarize(train_sums)
      train_metrics['learning_rate'] = first(metrics['learning_rate'])
      rate = window_steps / (time.perf_counter() - window_start)
      rates.append(rate)
      train_metrics['steps_per_second'] = rate
      log(done, 'train', train_metrics)
      result['train'] = train_metrics
      train_sums, window_start, window_steps = [], time.perf_counter(), 0

    if done % steps_per_epoch == 0 or done == num_steps:
      bar.update(loss=first(previous['loss']) / first(previous['count']))
      bar.close()
      bar, previous = None, None
      pause_start = time.perf_counter()  # steps/s leaves evaluation out
      if parallel == 'pmap':
        state = sync_batch_stats(state)
      eval_batches = data.eval_batches()
      if steps_per_eval > 0:
        eval_batches = itertools.islice(eval_batches, steps_per_eval)
      eval_metrics = evaluate(p_eval_step, state, eval_batches, shard)
      log(done, 'eval', eval_metrics)
      result['eval'] = eval_metrics
      print(f'epoch {done / steps_per_epoch:.2f} (step {done}): eval loss '
            f'{eval_metrics["loss"]:.4f} accuracy '
            f'{eval_metrics["accuracy"] * 100:.2f}%', flush=True)
      epochs_done = done // steps_per_epoch
      if workdir and (done == num_steps or (
          done % steps_per_epoch == 0 and
          epochs_done % checkpoint_every_epochs == 0)):
        save_checkpoint(workdir, one_copy(state), keep_checkpoints)
      window_start += time.perf_counter() - pause_start
    result['steps_run'] += 1

  if writing:
    jsonl.close()
    summary_writer.close()
    plot_curves(os.path.join(workdir, 'metrics.jsonl'),
                os.path.join(workdir, 'curves.png'), x='epoch')
  if rates:
    result['steps_per_second'] = (float(np.median(rates[1:])) if len(rates) > 1
                                  else rates[0])
  result['state'] = one_copy(state)
  return result
