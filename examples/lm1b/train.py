"""Transformer language model: the 2020 flax lm1b example on flaxish.

A decoder-only Transformer (models.py) trained with Adam and a linear
warmup / reciprocal-square-root learning rate, data parallel with `pmap`
over the local devices, on packed batches of subword tokens. The functions
below are meant to be read top to bottom and forked: `create_model`,
`create_optimizer`, `train_step`, `eval_step`, `sample_step`, `evaluate`,
`train`.
"""
import functools
import math
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from flaxish import jax_utils
from flaxish import nn
from flaxish import optim
from flaxish.metrics import JsonlWriter, SummaryWriter, plot_curves
from flaxish.training import checkpoints
from flaxish.training import common_utils
from flaxish.training.progress import ProgressBar

from examples.lm1b import decode
from examples.lm1b import input_pipeline
from examples.lm1b import models


def create_learning_rate_scheduler(base_learning_rate: float,
                                   warmup_steps: int):
  """`base * min(1, step / warmup) / sqrt(max(step, warmup))`: a linear
  warmup to `base / sqrt(warmup)`, then reciprocal-square-root decay."""
  def learning_rate_fn(step):
    step = jnp.asarray(step, jnp.float32)
    warmup = jnp.minimum(1., step / warmup_steps)
    return base_learning_rate * warmup * lax.rsqrt(
        jnp.maximum(step, float(warmup_steps)))
  return learning_rate_fn


def create_model(key, max_len: int, model_kwargs: Dict[str, Any]):
  """The model and the `Cache` definition used to decode with it."""
  module = models.TransformerLM.partial(**model_kwargs)
  with nn.attention.Cache().mutate() as cache_def:
    _, params = module.init_by_shape(key, [((1, max_len), jnp.int32)],
                                     cache=cache_def)
  return nn.Model(module, params), cache_def


def create_optimizer(model, weight_decay: float):
  """Adam(beta2 0.98, eps 1e-9) with decoupled weight decay; the learning
  rate is given at every step."""
  optimizer_def = optim.Adam(beta1=0.9, beta2=0.98, eps=1e-9,
                             weight_decay=weight_decay)
  return optimizer_def.create(model)


def compute_weighted_cross_entropy(logits, targets, weights):
  """The summed negative log-likelihood of `targets`, weighted, and the sum
  of the weights."""
  log_probs = nn.log_softmax(logits)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * weights), jnp.sum(weights)


def compute_metrics(logits, targets, weights):
  """Sums over the batch and all devices: loss (nats), correct next-token
  predictions, and the number of (non-padding) tokens."""
  loss, num_tokens = compute_weighted_cross_entropy(logits, targets, weights)
  correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
  metrics = {'loss': loss, 'correct': correct, 'tokens': num_tokens}
  return lax.psum(metrics, axis_name='batch')


def train_step(optimizer, batch, dropout_rng, learning_rate_fn):
  """One Adam step on this device's share of the batch (inside pmap)."""
  step = optimizer.state.step
  # A different dropout rng on every step and device, the same on resume.
  dropout_rng = jax.random.fold_in(dropout_rng, step)
  dropout_rng = jax.random.fold_in(dropout_rng, lax.axis_index('batch'))
  tokens = batch['tokens']
  weights = (batch['segmentation'] > 0).astype(jnp.float32)

  def loss_fn(model):
    with nn.stochastic(dropout_rng):
      logits = model(tokens, segmentation=batch['segmentation'],
                     positions=batch['positions'], train=True)
    loss, num_tokens = compute_weighted_cross_entropy(logits, tokens, weights)
    return loss / jnp.maximum(num_tokens, 1.), logits

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  (_, logits), grad = grad_fn(optimizer.target)
  grad = lax.pmean(grad, 'batch')
  learning_rate = learning_rate_fn(step)
  optimizer = optimizer.apply_gradient(grad, learning_rate=learning_rate)
  metrics = compute_metrics(logits, tokens, weights)
  metrics['learning_rate'] = learning_rate
  return optimizer, metrics


def eval_step(model, batch):
  logits = model(batch['tokens'], segmentation=batch['segmentation'],
                 positions=batch['positions'], train=False)
  weights = (batch['segmentation'] > 0).astype(jnp.float32)
  return compute_metrics(logits, batch['tokens'], weights)


def sample_step(model, cache, prompts, rng, eos_id, temperature, top_k):
  """Samples continuations of `prompts` (see decode.temperature_sample)."""
  def tokens_to_logits(tokens, position, cache):
    with cache.mutate() as new_cache:
      logits = model(tokens, positions=jnp.full(tokens.shape, position),
                     shift=False, train=False, cache=new_cache)
    return logits[:, 0], new_cache
  return decode.temperature_sample(prompts, cache, tokens_to_logits, rng,
                                   eos_id, temperature, top_k)


def summarize(metrics: Dict[str, float]) -> Dict[str, float]:
  """Per-token loss, perplexity and accuracy from summed metrics."""
  loss = metrics['loss'] / max(metrics['tokens'], 1.)
  return {'loss': loss, 'perplexity': math.exp(min(loss, 50.)),
          'accuracy': metrics['correct'] / max(metrics['tokens'], 1.)}


def evaluate(p_eval_step, model, eval_ds: List[Dict[str, np.ndarray]],
             num_characters: int) -> Dict[str, float]:
  """Loss (nats per token), perplexity, accuracy and bits per character
  over all of `eval_ds` (replicated `model`)."""
  totals = {'loss': 0., 'correct': 0., 'tokens': 0.}
  for batch in eval_ds:
    metrics = p_eval_step(model, common_utils.shard(batch))
    metrics = jax.device_get(jax.tree_util.tree_map(lambda x: x[0], metrics))
    for k in totals:
      totals[k] += float(metrics[k])
  result = summarize(totals)
  result['bits_per_char'] = totals['loss'] / num_characters / math.log(2)
  result['tokens'] = totals['tokens']
  return result


def generate(p_sample_step, model, cache_def, tokenizer, prompts: Sequence[str],
             length: int, rng) -> List[str]:
  """The prompts continued by the model (one device, unreplicated model)."""
  ids = np.zeros((len(prompts), length), np.int32)
  for row, prompt_ids in enumerate(tokenizer.encode(prompts)):
    if len(prompt_ids) >= length:
      raise ValueError(f'the prompt {prompts[row]!r} has {len(prompt_ids)} '
                       f'tokens; sample_length={length} leaves no room')
    ids[row, :len(prompt_ids)] = prompt_ids
  cache = cache_def.initialize_cache((len(prompts), length))
  out = jax.device_get(p_sample_step(model, cache, ids, rng))
  return [tokenizer.decode(row) for row in out]


def train(train_texts: Iterable[str], eval_texts: Sequence[str], tokenizer,
          *, workdir: Optional[str], emb_dim: int, num_heads: int,
          num_layers: int, qkv_dim: int, mlp_dim: int, dropout_rate: float,
          attention_dropout_rate: float, max_target_length: int,
          batch_size: int, learning_rate: float, warmup_steps: int,
          weight_decay: float, num_train_steps: int, eval_frequency: int,
          checkpoint_frequency: int, seed: int, sample_length: int,
          temperature: float, top_k: int,
          prompts: Sequence[str] = ()) -> Dict[str, Any]:
  """Trains for `num_train_steps`, evaluating (and continuing `prompts`, if
  any) every `eval_frequency` steps; resumes from `workdir` if it holds a
  checkpoint. Writes to `workdir` (when given): checkpoints,
  `metrics.jsonl`, TensorBoard events under `tensorboard/` (with the samples
  as text), `curves.png`.

  Returns:
    {'optimizer' (unreplicated), 'train': the last interval's train metrics,
     'eval': the last eval metrics, 'samples': the last samples of `prompts`,
     'steps_run', 'tokens_per_second' (median over the intervals)}.
  """
  num_devices = jax.local_device_count()
  if batch_size % num_devices:
    raise ValueError(f'batch_size {batch_size} must be a multiple of the '
                     f'{num_devices} local devices')
  rng = jax.random.PRNGKey(seed)
  init_rng, dropout_rng, sample_rng = jax.random.split(rng, 3)
  model_kwargs = dict(
      vocab_size=tokenizer.vocab_size, emb_dim=emb_dim, num_heads=num_heads,
      num_layers=num_layers, qkv_dim=qkv_dim, mlp_dim=mlp_dim,
      dropout_rate=dropout_rate,
      attention_dropout_rate=attention_dropout_rate)
  model, cache_def = create_model(init_rng, max_target_length, model_kwargs)
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(model.params))
  print(f'TransformerLM: {num_params:,} parameters')
  optimizer = create_optimizer(model, weight_decay)
  start_step = 0
  jsonl = summary_writer = None
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    optimizer = checkpoints.restore_checkpoint(workdir, optimizer)
    start_step = int(optimizer.state.step)
    if start_step:
      print(f'Resuming from {workdir} at step {start_step}')
    jsonl = JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))
    summary_writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  learning_rate_fn = create_learning_rate_scheduler(learning_rate,
                                                    warmup_steps)
  p_train_step = jax.pmap(
      functools.partial(train_step, learning_rate_fn=learning_rate_fn),
      axis_name='batch', donate_argnums=(0,))
  p_eval_step = jax.pmap(eval_step, axis_name='batch')
  p_sample_step = jax.jit(functools.partial(
      sample_step, eos_id=tokenizer.eos_id, temperature=temperature,
      top_k=top_k))

  train_iter = input_pipeline.train_batches(
      train_texts, tokenizer, batch_size, max_target_length, seed=seed,
      start_step=start_step)
  eval_ds = input_pipeline.eval_batches(eval_texts, tokenizer, batch_size,
                                        max_target_length)
  num_characters = input_pipeline.count_characters(eval_texts)

  optimizer = jax_utils.replicate(optimizer)
  dropout_rngs = jax_utils.replicate(dropout_rng)
  result = {'train': None, 'eval': None, 'samples': None, 'steps_run': 0}
  throughputs = []
  step = start_step
  while step < num_train_steps:
    interval = min(eval_frequency - step % eval_frequency,
                   num_train_steps - step)
    bar = ProgressBar(interval, desc=f'steps {step + 1}-{step + interval}')
    totals = {'loss': 0., 'correct': 0., 'tokens': 0.}
    for _ in range(interval):
      batch = common_utils.shard(next(train_iter))
      optimizer, metrics = p_train_step(optimizer, batch, dropout_rngs)
      # Fetching the metrics waits for the step (honest steps/s, and pmap
      # collectives never pile up).
      metrics = jax.device_get(jax.tree_util.tree_map(lambda x: x[0],
                                                      metrics))
      for k in totals:
        totals[k] += float(metrics[k])
      step += 1
      bar.update(loss=metrics['loss'] / max(metrics['tokens'], 1.))
      if workdir and (step % checkpoint_frequency == 0 or
                      step == num_train_steps):
        checkpoints.save_checkpoint(
            workdir, jax_utils.unreplicate(optimizer), step, keep=2)
    bar.close()
    train_metrics = summarize(totals)
    train_metrics['learning_rate'] = float(metrics['learning_rate'])
    train_metrics['tokens_per_second'] = totals['tokens'] / bar.elapsed
    throughputs.append(train_metrics['tokens_per_second'])
    eval_metrics = evaluate(p_eval_step, optimizer.target, eval_ds,
                            num_characters)
    print(f'step {step}: train loss {train_metrics["loss"]:.4f} '
          f'({train_metrics["tokens_per_second"]:.0f} tokens/s), eval loss '
          f'{eval_metrics["loss"]:.4f} perplexity '
          f'{eval_metrics["perplexity"]:.2f} bits/char '
          f'{eval_metrics["bits_per_char"]:.4f}', flush=True)
    if prompts:
      result['samples'] = generate(
          p_sample_step, jax_utils.unreplicate(optimizer.target), cache_def,
          tokenizer, prompts, sample_length,
          jax.random.fold_in(sample_rng, step))
      print('  sample: ' + result['samples'][0], flush=True)
    if workdir:
      for split, values in (('train', train_metrics), ('eval', eval_metrics)):
        jsonl.write(step, split=split, **values)
        for name, value in values.items():
          summary_writer.scalar(f'{split}_{name}', value, step)
      if prompts:
        summary_writer.text('samples', '\n\n'.join(result['samples']), step)
      summary_writer.flush()
    result.update(train=train_metrics, eval=eval_metrics,
                  steps_run=step - start_step)
  if workdir:
    jsonl.close()
    summary_writer.close()
    if result['steps_run']:
      plot_curves(os.path.join(workdir, 'metrics.jsonl'),
                  os.path.join(workdir, 'curves.png'),
                  metrics=('loss', 'accuracy'))
  result['tokens_per_second'] = (float(np.median(throughputs))
                                 if throughputs else None)
  result['optimizer'] = jax_utils.unreplicate(optimizer)
  return result
