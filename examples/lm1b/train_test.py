"""Tests of the lm1b example: the tokenizer round trip, packing without lost
tokens, cached decoding equal to the full pass, a small kjv run whose loss
falls and that resumes exactly from a checkpoint, mocked tfds lm1b."""
import json
import math
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('sentencepiece')

from examples.lm1b import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from examples.lm1b import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from examples.lm1b import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from examples.lm1b import train  # pylint: disable=g-import-not-at-top,wrong-import-position

TINY = dict(emb_dim=32, num_heads=2, num_layers=1, qkv_dim=32, mlp_dim=64,
            dropout_rate=0.1, attention_dropout_rate=0.1,
            max_target_length=32, batch_size=16, learning_rate=0.05,
            warmup_steps=10, weight_decay=0.1, seed=0, sample_length=24,
            temperature=1.0, top_k=10)
STEPS = 20  # per interval of the kjv runs


@pytest.fixture(scope='module')
def kjv():
  """2000 training verses, 100 held-out ones and a 384-piece tokenizer."""
  train_texts, eval_texts = input_pipeline.get_texts('kjv')
  train_texts, eval_texts = train_texts[:2000], eval_texts[:100]
  tokenizer = tokenizer_lib.train_tokenizer(train_texts, 384)
  return train_texts, eval_texts, tokenizer


def test_kjv_split_holds_out_whole_chapters():
  train_texts, eval_texts = input_pipeline.get_texts('kjv')
  assert len(train_texts) + len(eval_texts) == 31103
  assert 1400 < len(eval_texts) < 1700  # 59 of the 1189 chapters
  # Genesis 20 (chapter index 19) is the first held-out chapter.
  assert eval_texts[0].startswith('And Abraham journeyed from thence')
  assert input_pipeline.count_characters(['ab', 'c']) == 5


def test_tokenizer_round_trips_text_and_is_kept_in_the_workdir(kjv,
                                                              tmp_path):
  train_texts, eval_texts, _ = kjv
  tokenizer = tokenizer_lib.load_or_train_tokenizer(
      str(tmp_path), train_texts, 384)
  assert (tmp_path / 'tokenizer.model').exists()
  assert tokenizer.vocab_size == 384
  texts = eval_texts[:50] + ['  two  spaces ', 'naïve café, 東京!', '']
  ids = tokenizer.encode(texts)
  assert all(i.dtype == np.int32 and (i > tokenizer.eos_id).all()
             for i in ids)
  assert [tokenizer.decode(i) for i in ids] == texts
  # Decoding stops at the end of sentence and skips padding.
  assert tokenizer.decode(np.concatenate(
      [[0], ids[0], [tokenizer.eos_id], ids[1]])) == texts[0]
  # A second run reuses the saved tokenizer instead of training a new one.
  again = tokenizer_lib.load_or_train_tokenizer(str(tmp_path), ['x'], 100)
  assert again.model_proto == tokenizer.model_proto


def test_packing_keeps_every_token_once_and_pads_only_the_ends(kjv):
  _, eval_texts, tokenizer = kjv
  max_len = 32
  pieces = list(input_pipeline.tokenize(tokenizer, eval_texts, max_len))
  lengths = [len(tokenizer.encode([t])[0]) + 1 for t in eval_texts]
  assert sum(len(p) for p in pieces) == sum(lengths)
  assert max(lengths) > max_len and max(len(p) for p in pieces) == max_len
  batches = input_pipeline.eval_batches(eval_texts, tokenizer, 8, max_len)
  found = []
  for batch in batches:
    assert batch['tokens'].shape == (8, max_len)
    for tokens, segs, positions in zip(batch['tokens'],
                                       batch['segmentation'],
                                       batch['positions']):
      real = segs > 0
      # Padding only at the end of a row, segments numbered 1, 2, ...
      assert (np.sort(~real) == ~real).all()
      assert (tokens[~real] == 0).all() and (positions[~real] == 0).all()
      for s in range(1, segs.max() + 1):
        piece = tokens[segs == s]
        np.testing.assert_array_equal(positions[segs == s],
                                      np.arange(len(piece)))
        found.append(tuple(piece))
  assert sorted(found) == sorted(tuple(p) for p in pieces)
  total = sum(int((b['segmentation'] > 0).sum()) for b in batches)
  assert total / (len(batches) * 8 * max_len) > 0.85


def test_learning_rate_warms_up_linearly_then_decays_as_rsqrt():
  lr = train.create_learning_rate_scheduler(0.05, warmup_steps=100)
  peak = 0.05 / 10.
  np.testing.assert_allclose([lr(0), lr(50), lr(100), lr(400)],
                             [0., peak / 2, peak, peak / 2], rtol=1e-6)


def test_cached_decoding_gives_the_logits_of_the_full_pass():
  length, vocab = 8, 50
  kwargs = dict(vocab_size=vocab, emb_dim=16, num_heads=2, num_layers=2,
                qkv_dim=16, mlp_dim=32)
  model, cache_def = train.create_model(jax.random.PRNGKey(0), length,
                                        kwargs)
  tokens = np.random.default_rng(0).integers(2, vocab, (3, length))

  @jax.jit
  def full_and_decoded(model, cache, tokens):
    full = model(tokens, train=False)
    inputs = models.shift_right(tokens)
    steps = []
    for t in range(length):  # one position per call, through the cache
      with cache.mutate() as cache:
        steps.append(model(inputs[:, t:t + 1], shift=False, cache=cache,
                           positions=jnp.full((3, 1), t)))
    return full, jnp.concatenate(steps, axis=1)

  full, decoded = full_and_decoded(
      model, cache_def.initialize_cache((3, length)), tokens)
  np.testing.assert_allclose(decoded, full, rtol=1e-4, atol=1e-4)
  # Greedy sampling under jit continues the prompt with the argmax of the
  # full pass at every position.
  prompts = np.zeros((3, length), np.int32)
  prompts[0, :3] = tokens[0, :3]
  prompts[2, :1] = tokens[2, :1]
  sample = jax.jit(lambda m, c, p, r: train.sample_step(
      m, c, p, r, eos_id=1, temperature=0., top_k=0))
  out = np.asarray(sample(model, cache_def.initialize_cache((3, length)),
                          prompts, jax.random.PRNGKey(0)))
  np.testing.assert_array_equal(out[0, :3], tokens[0, :3])
  predicted = np.argmax(full_and_decoded(
      model, cache_def.initialize_cache((3, length)), out)[0], -1)
  for row, prompt_length in zip(range(3), (3, 0, 1)):
    ended = np.flatnonzero(out[row] == 1)
    stop = ended[0] + 1 if len(ended) else length
    np.testing.assert_array_equal(out[row, prompt_length:stop],
                                  predicted[row, prompt_length:stop])
    assert (out[row, stop:] == 0).all()


def test_small_kjv_run_learns_samples_and_resumes_exactly(kjv, tmp_path):
  # One test, so that the uninterrupted run is made once (also under xdist).
  _, eval_texts, tokenizer = kjv
  workdir = str(tmp_path / 'straight')
  result = train.train(*kjv, workdir=workdir, num_train_steps=2 * STEPS,
                       eval_frequency=STEPS, checkpoint_frequency=STEPS,
                       prompts=['And God said', ''], **TINY)
  # The loss falls.
  records = [json.loads(line) for line in
             open(os.path.join(workdir, 'metrics.jsonl'))]
  evals = [r for r in records if r['split'] == 'eval']
  trains = [r for r in records if r['split'] == 'train']
  assert [r['step'] for r in evals] == [STEPS, 2 * STEPS]
  uniform = math.log(tokenizer.vocab_size)
  assert evals[1]['loss'] < evals[0]['loss'] < uniform
  assert evals[1]['loss'] < uniform - 0.8
  assert trains[1]['loss'] < trains[0]['loss']
  assert result['eval']['perplexity'] == pytest.approx(
      math.exp(result['eval']['loss']))
  # Padding never counts: the eval covers exactly the held-out tokens.
  num_tokens = sum(len(ids) + 1 for ids in tokenizer.encode(eval_texts))
  assert result['eval']['tokens'] == num_tokens
  chars = input_pipeline.count_characters(eval_texts)
  assert result['eval']['bits_per_char'] == pytest.approx(
      result['eval']['loss'] * num_tokens / chars / math.log(2))
  # The samples continue their prompt.
  assert result['samples'][0].startswith('And God said')
  assert all(isinstance(s, str) for s in result['samples'])
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(os.path.join(workdir, 'tensorboard')))
  with open(os.path.join(workdir, 'curves.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'

  # Resume. The run saved a checkpoint at step STEPS: a run stopped there
  # (killed, say) leaves the same workdir, less what came later.
  resume_dir = tmp_path / 'resumed'
  resume_dir.mkdir()
  shutil.copy(os.path.join(workdir, f'checkpoint_{STEPS}'), resume_dir)
  common = dict(workdir=str(resume_dir), eval_frequency=STEPS,
                checkpoint_frequency=STEPS, **TINY)
  resumed = train.train(*kjv, num_train_steps=2 * STEPS, **common)
  assert resumed['steps_run'] == STEPS
  assert int(resumed['optimizer'].state.step) == 2 * STEPS
  # Same data order and dropout after the restart: the same parameters.
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      result['optimizer'].target.params, resumed['optimizer'].target.params)
  assert resumed['eval']['loss'] == pytest.approx(result['eval']['loss'],
                                                  rel=1e-5)
  steps = [json.loads(l)['step'] for l in
           (resume_dir / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [2 * STEPS, 2 * STEPS]
  assert sorted(p.name for p in resume_dir.glob('checkpoint_*[0-9]')) == [
      f'checkpoint_{STEPS}', f'checkpoint_{2 * STEPS}']
  # Nothing left to do: no step runs.
  again = train.train(*kjv, num_train_steps=2 * STEPS, **common)
  assert again['steps_run'] == 0 and again['eval'] is None
  assert int(again['optimizer'].state.step) == 2 * STEPS


def test_a_few_steps_under_mocked_tfds_lm1b(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=64):
    train_texts, eval_texts = input_pipeline.get_texts('lm1b')
    assert len(eval_texts) == 64 and isinstance(eval_texts[0], str)
    tokenizer = tokenizer_lib.load_or_train_tokenizer(
        str(tmp_path), train_texts, 300)
    result = train.train(train_texts, eval_texts, tokenizer,
                         workdir=str(tmp_path), num_train_steps=3,
                         eval_frequency=3, checkpoint_frequency=3,
                         **{**TINY, 'batch_size': 8, 'dropout_rate': 0.,
                            'attention_dropout_rate': 0.})
  assert int(result['optimizer'].state.step) == 3
  assert np.isfinite(result['train']['loss'])
  assert np.isfinite(result['eval']['loss'])
  assert sorted(os.listdir(tmp_path)) == [
      'checkpoint_3', 'checkpoint_3.meta', 'curves.png', 'metrics.jsonl',
      'tensorboard', 'tokenizer.model']


def test_missing_tfds_data_fails_fast_and_suggests_kjv(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  start = time.perf_counter()
  with pytest.raises(RuntimeError, match='--dataset=kjv'):
    input_pipeline.get_texts('lm1b', data_dir=str(tmp_path))
  assert time.perf_counter() - start < 60  # no download retries
