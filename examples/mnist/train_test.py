"""End-to-end tests of the MNIST example: mocked tfds, real offline digits,
jit and pmap data parallelism on 8 fake CPU devices and on 2 processes,
resume from a checkpoint, and failing fast without the tfds data."""
import functools
import json
import os
import time

import jax
import numpy as np
import pytest

from examples.mnist import input_pipeline
from examples.mnist import train
from flaxish import traverse_util
from tests.distributed import _launch

tfds = pytest.importorskip('tensorflow_datasets')

HPARAMS = dict(learning_rate=0.1, momentum=0.9, seed=0)


def test_train_and_evaluate_under_mocked_tfds(tmp_path):
  with tfds.testing.mock_data(num_examples=64):
    train_ds, test_ds = input_pipeline.get_datasets('mnist')
  assert train_ds['image'].shape == (64, 28, 28, 1)
  assert train_ds['image'].dtype == np.float32
  assert 0. <= train_ds['image'].min() and train_ds['image'].max() <= 1.
  result = train.train(train_ds, test_ds, workdir=str(tmp_path),
                       batch_size=16, num_epochs=1, **HPARAMS)
  assert int(result['optimizer'].state.step) == 4
  assert np.isfinite(result['train']['loss'])
  assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(tmp_path / 'tensorboard'))
  records = [json.loads(line) for line in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert {r['split'] for r in records} == {'train', 'test'}


def test_missing_tfds_data_fails_fast_and_suggests_mnist5k(tmp_path):
  start = time.perf_counter()
  with pytest.raises(RuntimeError, match='--dataset=mnist5k'):
    input_pipeline.get_datasets('mnist', tfds_data_dir=str(tmp_path))
  assert time.perf_counter() - start < 60  # no download retries


def test_mnist5k_split_is_real_seeded_and_balanced():
  train_ds, test_ds = input_pipeline.get_datasets('mnist5k', seed=0)
  assert len(train_ds['label']) == 4000 and len(test_ds['label']) == 1000
  again, _ = input_pipeline.get_datasets('mnist5k', seed=0)
  np.testing.assert_array_equal(train_ds['label'], again['label'])
  counts = np.bincount(test_ds['label'], minlength=10)
  assert counts.min() > 60  # shuffled: every digit is in the test split
  # Real digits: the mean image has ink in the middle, none in the corners.
  mean = train_ds['image'].mean(0)[..., 0]
  assert mean[12:16, 12:16].mean() > 0.2 and mean[:3, :3].max() < 0.01


def test_shifted_copies_are_translations_of_the_originals():
  rng = np.random.RandomState(0)
  images = rng.rand(5, 28, 28, 1).astype(np.float32)
  dataset = {'image': images, 'label': np.arange(5, dtype=np.int32)}
  augmented = input_pipeline.add_shifted_copies(dataset, 3, max_shift=2,
                                                seed=1)
  assert augmented['image'].shape == (20, 28, 28, 1)
  np.testing.assert_array_equal(augmented['label'], np.tile(np.arange(5), 4))
  np.testing.assert_array_equal(augmented['image'][:5], images)
  moved = 0
  for copy, label in zip(augmented['image'][5:], augmented['label'][5:]):
    # Exactly one shift (dy, dx) in [-2, 2]^2 maps the original onto it.
    padded = np.pad(images[label, ..., 0], 2)
    matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(copy[..., 0], padded[2 - dy:30 - dy,
                                                      2 - dx:30 - dx])]
    assert len(matches) == 1, matches
    moved += matches[0] != (0, 0)
  assert moved >= 10  # 15 copies; 1 in 25 keeps (0, 0)
  again = input_pipeline.add_shifted_copies(dataset, 3, max_shift=2, seed=1)
  np.testing.assert_array_equal(again['image'], augmented['image'])


def test_two_epochs_on_real_digits_are_clearly_above_chance():
  # With the 2020 defaults (lr 0.1, momentum 0.9) the first epoch on 4000
  # images ends near 79% test accuracy (measured: 78.9%), the second near 92%.
  train_ds, test_ds = input_pipeline.get_datasets('mnist5k', seed=0)
  result = train.train(train_ds, test_ds, workdir=None, batch_size=128,
                       num_epochs=2, **HPARAMS)
  assert result['test']['accuracy'] > 0.85


def _flat(params):
  return {'/'.join(k): np.asarray(v) for k, v in
          traverse_util.flatten_dict(jax.device_get(params)).items()}


def _assert_params_close(actual, expected, what):
  assert sorted(actual) == sorted(expected) and len(expected) == 8, what
  for name, value in expected.items():
    np.testing.assert_allclose(actual[name], value, rtol=1e-4, atol=1e-6,
                               err_msg=f'{what}: {name}')


def test_jit_and_pmap_train_like_one_device():
  rng = np.random.RandomState(0)
  noise = lambda n: {'image': rng.rand(n, 28, 28, 1).astype(np.float32),
                     'label': rng.randint(0, 10, n).astype(np.int32)}
  train_ds, test_ds = noise(256), noise(100)
  assert jax.device_count() == 8
  with pytest.raises(ValueError, match='multiple of the number of devices'):
    train.train(train_ds, test_ds, workdir=None, batch_size=60, num_epochs=1,
                **HPARAMS)

  # The reference: one device, the same 4 global batches of 64 as `train`
  # draws (permutation of epoch 1), written out by hand.
  @jax.jit
  def step(optimizer, images, labels):
    grad = jax.grad(lambda model: train.cross_entropy_loss(
        model(images), labels))(optimizer.target)
    return optimizer.apply_gradient(grad)

  rng_key, init_rng = jax.random.split(jax.random.PRNGKey(HPARAMS['seed']))
  optimizer = train.create_optimizer(train.create_model(init_rng),
                                     HPARAMS['learning_rate'],
                                     HPARAMS['momentum'])
  perms = jax.random.permutation(jax.random.fold_in(rng_key, 1), 256)
  for perm in np.asarray(perms).reshape(4, 64):
    optimizer = step(optimizer, train_ds['image'][perm],
                     train_ds['label'][perm])
  expected = _flat(optimizer.target.params)

  for parallel in ('jit', 'pmap'):
    result = train.train(train_ds, test_ds, workdir=None, batch_size=64,
                         num_epochs=1, parallel=parallel, **HPARAMS)
    trained = result['optimizer']
    assert not trained.is_replicated() and int(trained.state.step) == 4
    if parallel == 'jit':  # one copy on each of the 8 devices of the mesh
      kernel = trained.target.params['Dense_3']['kernel']
      assert kernel.shape == (256, 10)
      assert len(kernel.sharding.device_set) == 8
      assert kernel.sharding.is_fully_replicated
    _assert_params_close(_flat(trained.target.params), expected, parallel)


# One of two processes of the next test: runs examples/mnist/main.py's
# main() with the given flags, twice (the second run restores the first's
# checkpoint and has nothing left to do). It trains on the first 512
# training and 200 test digits of the dataset, records what `train.train`
# returned, and counts the checkpoint files this process wrote.
_WORKER = '''
import json
import os
import runpy
import sys

from absl import flags
import jax
from jax.experimental import multihost_utils
import numpy as np

example, out, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, example)
import input_pipeline  # the modules main.py imports
import train
from flaxish import traverse_util
from flaxish.training import checkpoints

results, writes = [], []
get_datasets, train_fn = input_pipeline.get_datasets, train.train
write_fn = checkpoints._write_atomically

def first_examples(*args, **kwargs):
  train_ds, test_ds = get_datasets(*args, **kwargs)
  return ({k: v[:512] for k, v in train_ds.items()},
          {k: v[:200] for k, v in test_ds.items()})

def recording_train(*args, **kwargs):
  results.append(train_fn(*args, **kwargs))
  return results[-1]

def counting_write(state, path, *args, **kwargs):
  writes.append(path)
  return write_fn(state, path, *args, **kwargs)

input_pipeline.get_datasets = first_examples
train.train = recording_train
checkpoints._write_atomically = counting_write
main = runpy.run_path(os.path.join(example, 'main.py'))
flags.FLAGS(['main.py'] + argv)
main['main']([])
# As if launched again: once all processes are done (and process 0 wrote).
multihost_utils.sync_global_devices('the first run ended')
main['main']([])
me = jax.process_index()
params = traverse_util.flatten_dict(
    jax.device_get(results[0]['optimizer'].target.params))
np.savez(os.path.join(out, f'params{me}.npz'),
         **{'/'.join(k): v for k, v in params.items()})
with open(os.path.join(out, f'process{me}.json'), 'w') as f:
  json.dump({'process_count': jax.process_count(),
             'device_count': jax.device_count(),
             'epochs_run': [r['epochs_run'] for r in results],
             'steps': [int(r['optimizer'].state.step) for r in results],
             'writes': [os.path.basename(p) for p in writes]}, f)
'''


def test_main_on_two_processes_trains_like_one(tmp_path):
  # 2 processes x 4 CPU devices, 4 steps of 128 real digits (mnist5k).
  worker = tmp_path / 'worker.py'
  worker.write_text(_WORKER)
  workdir = tmp_path / 'workdir'
  flags = ['--dataset=mnist5k', '--batch_size=128', '--num_epochs=1',
           f'--workdir={workdir}']
  example = os.path.dirname(os.path.abspath(__file__))
  workers = _launch.run_workers(str(worker), [example, str(tmp_path)] + flags,
                                timeout=240)
  assert [w.returncode for w in workers] == [0, 0], _launch.logs(workers)
  for w in workers:  # the second run restored epoch 1 on both processes
    assert 'Nothing to do' in w.stdout, _launch.logs(workers)

  infos, params = [], []
  for i in range(2):
    infos.append(json.loads((tmp_path / f'process{i}.json').read_text()))
    params.append(dict(np.load(tmp_path / f'params{i}.npz')))
  for info in infos:
    assert (info['process_count'], info['device_count']) == (2, 8), info
    assert info['epochs_run'] == [1, 0] and info['steps'] == [4, 4], info
  # The checkpoint was written once, by process 0, and so were the metrics.
  assert [info['writes'] for info in infos] == [['checkpoint_1'], []]
  assert sorted(n for n in os.listdir(workdir) if not n.endswith('.meta')
                if n.startswith('checkpoint')) == ['checkpoint_1']
  records = [json.loads(line) for line in
             (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['split'] for r in records] == ['train', 'test']

  # Both processes hold the same parameters, those of one process (here, 8
  # devices) training on the same global batches: each fed its own half.
  for name, value in params[0].items():
    np.testing.assert_array_equal(value, params[1][name], err_msg=name)
  train_ds, test_ds = input_pipeline.get_datasets('mnist5k', seed=0)
  result = train.train({k: v[:512] for k, v in train_ds.items()},
                       {k: v[:200] for k, v in test_ds.items()},
                       workdir=None, batch_size=128, num_epochs=1, **HPARAMS)
  _assert_params_close(params[0], _flat(result['optimizer'].target.params),
                       'two processes vs one')


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
  train_ds, test_ds = input_pipeline.get_datasets('mnist5k', seed=0)
  train_ds = {k: v[:256] for k, v in train_ds.items()}
  test_ds = {k: v[:100] for k, v in test_ds.items()}
  common = dict(batch_size=64, **HPARAMS)
  straight = train.train(train_ds, test_ds, workdir=str(tmp_path / 'a'),
                         num_epochs=2, **common)
  first = train.train(train_ds, test_ds, workdir=str(tmp_path / 'b'),
                      num_epochs=1, **common)
  assert int(first['optimizer'].state.step) == 4
  resumed = train.train(train_ds, test_ds, workdir=str(tmp_path / 'b'),
                        num_epochs=2, **common)
  assert resumed['epochs_run'] == 1
  assert int(resumed['optimizer'].state.step) == 8
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      straight['optimizer'].target.params, resumed['optimizer'].target.params)
  records = [json.loads(l) for l in
             (tmp_path / 'b' / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['epoch'], r['step']) for r in records] == [(1, 4), (1, 4),
                                                        (2, 8), (2, 8)]


def _noise_datasets():
  """256 training and 100 test images of noise: enough to check mechanics."""
  rng = np.random.RandomState(0)
  make = lambda n: {'image': rng.rand(n, 28, 28, 1).astype(np.float32),
                    'label': rng.randint(0, 10, n).astype(np.int32)}
  return make(256), make(100)


def test_learning_rate_schedules_match_their_formulas():
  steps = np.arange(12)
  constant = train.create_learning_rate_fn('constant', 0.1, 4, 3)
  np.testing.assert_allclose([constant(s) for s in steps], 0.1, rtol=1e-6)
  cosine = train.create_learning_rate_fn('cosine', 0.1, 4, 3,
                                         warmup_epochs=1.)
  expected = (0.1 * np.minimum(1., steps / 4.) *
              (np.cos(np.pi * steps / 12.) + 1.) / 2.)
  np.testing.assert_allclose([cosine(s) for s in steps], expected,
                             rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="'linear'"):
    train.create_learning_rate_fn('linear', 0.1, 4, 3)


def test_constant_schedule_steps_as_the_2020_optimizer():
  train_ds, _ = _noise_datasets()
  batch = {k: v[:64] for k, v in train_ds.items()}
  optimizer = train.create_optimizer(
      train.create_model(jax.random.PRNGKey(0)), 0.1, 0.9)
  grad = jax.grad(lambda model: train.cross_entropy_loss(
      model(batch['image']), batch['label']))(optimizer.target)
  expected = jax.device_get(optimizer.apply_gradient(grad).target.params)
  constant = train.create_learning_rate_fn('constant', 0.1, 4, 3)
  stepped, metrics = train.train_step(optimizer, batch, constant)
  assert float(metrics['learning_rate']) == np.float32(0.1)
  jax.tree_util.tree_map(
      functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7),
      expected, jax.device_get(stepped.target.params))


def test_cosine_warmup_starts_at_zero_and_logs_each_epoch_mean(tmp_path):
  train_ds, test_ds = _noise_datasets()  # 4 steps per epoch of 64
  cosine = train.create_learning_rate_fn('cosine', 0.1, 4, 2,
                                         warmup_epochs=1.)
  # Step 0 is taken at learning rate 0: the parameters do not move.
  optimizer = train.create_optimizer(
      train.create_model(jax.random.PRNGKey(0)), 0.1, 0.9)
  initial = jax.device_get(optimizer.target.params)
  batch = {k: v[:64] for k, v in train_ds.items()}
  optimizer, metrics = train.train_step(optimizer, batch, cosine)
  assert float(metrics['learning_rate']) == 0.
  jax.tree_util.tree_map(np.testing.assert_array_equal, initial,
                         jax.device_get(optimizer.target.params))
  train.train(train_ds, test_ds, workdir=str(tmp_path), batch_size=64,
              num_epochs=2, schedule='cosine', warmup_epochs=1., **HPARAMS)
  logged = [r['learning_rate'] for r in map(json.loads, (
      tmp_path / 'metrics.jsonl').read_text().splitlines())
            if r['split'] == 'train']
  expected = [np.mean([cosine(s) for s in range(4)]),
              np.mean([cosine(s) for s in range(4, 8)])]
  np.testing.assert_allclose(logged, expected, rtol=1e-6)
  assert 0. < logged[1] < logged[0] < 0.1
