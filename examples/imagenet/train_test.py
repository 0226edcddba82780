"""Tests of the ImageNet example on 8 fake CPU devices (see conftest.py):
mocked tfds end to end, BatchNorm sync, exact resume, bfloat16 and float16,
the input pipelines, and the ResNet parameter counts."""
import functools
import json
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.imagenet import input_pipeline
from examples.imagenet import models
from examples.imagenet import train
from flaxish import jax_utils
from flaxish import nn
from flaxish.training import checkpoints
from flaxish.training import common_utils

tfds = pytest.importorskip('tensorflow_datasets')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

HPARAMS = dict(model_name='ResNet18', learning_rate=0.1, momentum=0.9,
               nesterov=True, weight_decay=1e-4, warmup_epochs=1, seed=0)


def _leaves_equal(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---- Models --------------------------------------------------------------


def _expected_count(stage_sizes, bottleneck, num_classes=1000):
  """ResNet v1 parameter count, from the architecture (conv kernels without
  bias, BatchNorm scale and bias, Dense kernel and bias)."""
  count = 7 * 7 * 3 * 64 + 2 * 64
  channels = 64
  for stage, num_blocks in enumerate(stage_sizes):
    width = 64 * 2**stage
    out = width * 4 if bottleneck else width
    for i in range(num_blocks):
      if bottleneck:
        count += channels * width + 9 * width * width + width * out
        count += 2 * (width + width + out)
      else:
        count += 9 * channels * width + 9 * width * width + 4 * width
      if channels != out or (stage > 0 and i == 0):
        count += channels * out + 2 * out
      channels = out
  return count + channels * num_classes + num_classes


def test_parameter_counts_are_the_standard_ones():
  # torchvision's counts for 18-152; ResNet-200 (3, 24, 36, 3) has 64.67 M.
  expected = {'ResNet18': 11_689_512, 'ResNet34': 21_797_672,
              'ResNet50': 25_557_032, 'ResNet101': 44_549_160,
              'ResNet152': 60_192_808, 'ResNet200': 64_673_832}
  blocks = {'ResNet18': (2, 2, 2, 2), 'ResNet34': (3, 4, 6, 3),
            'ResNet50': (3, 4, 6, 3), 'ResNet101': (3, 4, 23, 3),
            'ResNet152': (3, 8, 36, 3), 'ResNet200': (3, 24, 36, 3)}
  for name, model_def in models.MODELS.items():
    def init(key, x, model_def=model_def):  # shapes only: no FLOPs
      with nn.stateful() as state:
        _, params = model_def.init(key, x, num_classes=1000)
      return params, state
    params, state = jax.eval_shape(
        init, jax.ShapeDtypeStruct((2,), jnp.uint32),
        jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    count = sum(int(np.prod(p.shape))
                for p in jax.tree_util.tree_leaves(params))
    assert count == expected[name], name
    assert count == _expected_count(blocks[name], int(name[6:]) >= 50), name
    num_batch_norms = len(state.as_dict())
    assert len(jax.tree_util.tree_leaves(state)) == 2 * num_batch_norms


# ---- Input pipelines --------------------------------------------------------


def test_mocked_imagenet_batches_have_the_real_layout():
  with tfds.testing.mock_data(num_examples=20):
    data = input_pipeline.get_dataset('imagenet2012', global_batch_size=8,
                                      image_size=32)
    train_batch = next(data.train_batches(0))
    eval_batches = list(data.eval_batches())
  assert (data.num_train_examples, data.num_eval_examples) == (20, 20)
  assert data.num_classes == 1000
  assert train_batch['image'].shape == (8, 32, 32, 3)
  assert train_batch['image'].dtype == np.float32
  assert train_batch['label'].dtype == np.int32
  assert 0 <= train_batch['label'].min() and train_batch['label'].max() < 1000
  # Normalized (mock JPEGs are uniform noise in [0, 255]).
  assert abs(train_batch['image'].mean()) < 0.5
  assert 0.2 < train_batch['image'].std() < 2
  assert len(eval_batches) == 3  # 20 images, batches of 8, the last padded
  masks = np.stack([b['mask'] for b in eval_batches])
  assert masks.sum() == 20 and masks[-1].tolist() == [1] * 4 + [0] * 4


def test_missing_tfds_data_fails_fast_and_suggests_offline_data(tmp_path):
  start = time.perf_counter()
  with pytest.raises(RuntimeError, match='--dataset=fake'):
    input_pipeline.get_dataset('imagenet2012', 8, data_dir=str(tmp_path))
  assert time.perf_counter() - start < 60  # no download attempts


def test_fake_data_has_imagenet_shapes_and_sizes():
  data = input_pipeline.get_dataset('fake', 16, dtype='bfloat16')
  batch = next(data.train_batches(0))
  assert batch['image'].shape == (16, 224, 224, 3)
  assert batch['image'].dtype == jnp.bfloat16
  assert data.num_train_examples == 1281167
  assert sum(1 for _ in data.eval_batches()) == 50000 // 16


def test_mnist5k_order_depends_only_on_the_step():
  data = input_pipeline.load_mnist5k(16, num_train=64, num_test=20)
  stream = data.train_batches(0)
  batches = [next(stream) for _ in range(6)]  # 1.5 epochs
  resumed = next(data.train_batches(5))
  _leaves_equal(batches[5], resumed)
  first_epoch = np.concatenate([b['label'] for b in batches[:4]])
  assert len(first_epoch) == 64
  eval_batches = list(data.eval_batches())
  assert [int(b['mask'].sum()) for b in eval_batches] == [16, 4]


def test_each_process_reads_its_own_slice(monkeypatch):
  whole = next(input_pipeline.load_mnist5k(16, num_train=64,
                                           num_test=8).train_batches(3))
  parts = []
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  for index in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda index=index: index)
    data = input_pipeline.load_mnist5k(16, num_train=64, num_test=8)
    parts.append(next(data.train_batches(3)))
  np.testing.assert_array_equal(
      np.concatenate([p['label'] for p in parts]), whole['label'])
  assert parts[0]['image'].shape == (8, 32, 32, 3)


# ---- Training ----------------------------------------------------------------
# The end-to-end run is a real ResNet-18; the other runs use a two-stage
# member of the family, which compiles in a fraction of the time.


@pytest.fixture
def tiny_resnet(monkeypatch):
  monkeypatch.setitem(models.MODELS, 'TinyResNet',
                      models.ResNet.partial(stage_sizes=(1, 1)))
  return dict(HPARAMS, model_name='TinyResNet')


@pytest.fixture
def digits():
  return input_pipeline.load_mnist5k(16, num_train=32, num_test=16)


def test_resnet18_trains_and_evaluates_under_mocked_tfds(tmp_path):
  with tfds.testing.mock_data(num_examples=16):
    data = input_pipeline.get_dataset('imagenet2012', global_batch_size=16,
                                      image_size=32)
    result = train.train_and_evaluate(
        data, workdir=str(tmp_path), batch_size=16, num_epochs=2,
        log_every_steps=1, checkpoint_every_epochs=1, keep_checkpoints=1,
        **HPARAMS)
  state = result['state']
  assert int(state.step) == 2 and int(state.optimizer.state.step) == 2
  assert result['steps_run'] == 2
  assert np.isfinite(result['train']['loss'])
  assert 0. <= result['eval']['accuracy'] <= 1.
  assert os.listdir(tmp_path / 'tensorboard')[0].startswith('events.out')
  assert (tmp_path / 'curves.png').read_bytes()[:4] == b'\x89PNG'
  records = [json.loads(line) for line in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['split'], r['step']) for r in records] == [
      ('train', 1), ('eval', 1), ('train', 2), ('eval', 2)]
  # keep_checkpoints=1: only the last of the two epochs' checkpoints is left,
  # with one copy of the final state.
  assert sorted(n for n in os.listdir(tmp_path) if not n.endswith('.meta')
                if n.startswith('checkpoint')) == ['checkpoint_2']
  template = train.create_train_state(jax.random.PRNGKey(1), 'ResNet18',
                                      1000, 32, 0.9, True)
  _leaves_equal(checkpoints.restore_checkpoint(tmp_path, template), state)


@pytest.mark.parametrize('cross_replica_bn', [False, True])
def test_batch_norm_sync_makes_every_replica_identical(tiny_resnet,
                                                       cross_replica_bn):
  state = train.create_train_state(jax.random.PRNGKey(0), 'TinyResNet', 10,
                                   32, 0.9, True,
                                   cross_replica_bn=cross_replica_bn)
  state = jax_utils.replicate(state)
  p_train_step = jax.pmap(
      functools.partial(train.train_step, learning_rate_fn=lambda step: 0.1,
                        weight_decay=1e-4), axis_name='batch')
  data = input_pipeline.get_dataset('fake', 16, image_size=32)
  state, _ = p_train_step(state, common_utils.shard(
      next(data.train_batches(0))))
  params = jax.device_get(state.optimizer.target.params)
  for leaf in jax.tree_util.tree_leaves(params):  # gradients were averaged
    np.testing.assert_array_equal(leaf, np.broadcast_to(leaf[0], leaf.shape))
  leaves = jax.tree_util.tree_leaves(jax.device_get(state.model_state))
  differ = [not np.allclose(leaf, leaf[0]) for leaf in leaves]
  # Per-device BatchNorm: every device saw other images, so its running
  # averages differ; cross-replica BatchNorm averages them in every step.
  assert any(differ) != cross_replica_bn

  synced = jax.device_get(train.sync_batch_stats(state).model_state)
  for before, after in zip(leaves, jax.tree_util.tree_leaves(synced)):
    np.testing.assert_array_equal(after, np.broadcast_to(after[0],
                                                         after.shape))
    np.testing.assert_allclose(after[0], before.mean(0), rtol=1e-5,
                               atol=1e-6)


def test_resume_matches_an_uninterrupted_run(tmp_path, tiny_resnet, digits):
  common = dict(batch_size=16, num_epochs=2, checkpoint_every_epochs=1,
                log_every_steps=1, **tiny_resnet)
  straight = train.train_and_evaluate(digits, workdir=str(tmp_path / 'a'),
                                      **common)
  assert sorted(os.listdir(tmp_path / 'a'))[:4] == [
      'checkpoint_2', 'checkpoint_2.meta', 'checkpoint_4', 'checkpoint_4.meta']
  os.makedirs(tmp_path / 'b')
  shutil.copy(tmp_path / 'a' / 'checkpoint_2', tmp_path / 'b')
  resumed = train.train_and_evaluate(digits, workdir=str(tmp_path / 'b'),
                                     **common)
  assert resumed['steps_run'] == 2 and int(resumed['state'].step) == 4
  # Params, momentum, BatchNorm statistics, step: all the same.
  for a, b in zip(jax.tree_util.tree_leaves(straight['state']),
                  jax.tree_util.tree_leaves(resumed['state']), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert resumed['eval'] == pytest.approx(straight['eval'])
  steps = [json.loads(line)['step'] for line in
           (tmp_path / 'b' / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [3, 4, 4]  # train 3, train 4, eval 4


def test_jit_and_pmap_train_like_one_device(tiny_resnet, digits):
  # Two steps on the global batches of 16 digits: on one device with the
  # plain train step (no 'batch' axis, BatchNorm over the whole batch), and
  # on 8 devices with pmap (cross-replica BatchNorm: statistics of the whole
  # batch too) and with jit over a mesh.
  hparams = dict(tiny_resnet, warmup_epochs=0.)  # lr > 0 from step 0
  learning_rate_fn = train.create_learning_rate_fn(0.1 * 16 / 256, 2, 1, 0.)
  step = jax.jit(functools.partial(
      train.train_step, learning_rate_fn=learning_rate_fn,
      weight_decay=hparams['weight_decay'], axis_name=None))
  state = train.create_train_state(jax.random.PRNGKey(0), 'TinyResNet', 10,
                                   32, 0.9, True)
  batches = digits.train_batches(0)
  for _ in range(2):
    state, metrics = step(state, next(batches))
    float(metrics['loss'])
  eval_step = jax.jit(functools.partial(train.eval_step, axis_name=None))
  expected_eval = train.summarize([eval_step(state, batch)
                                   for batch in digits.eval_batches()])
  assert int(state.step) == 2

  for parallel in ('pmap', 'jit'):
    result = train.train_and_evaluate(
        digits, workdir=None, batch_size=16, num_epochs=1,
        cross_replica_bn=True, parallel=parallel, **hparams)
    trained = result['state']
    if parallel == 'jit':  # one copy on each of the 8 devices of the mesh
      assert len(trained.step.sharding.device_set) == 8
    # Parameters, momentum, BatchNorm statistics and step.
    for a, b in zip(jax.tree_util.tree_leaves(trained),
                    jax.tree_util.tree_leaves(state), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5,
                                 err_msg=parallel)
    assert result['eval'] == pytest.approx(expected_eval, rel=1e-4)


# A run in a fresh process that opts in to flaxish's CPU settings before JAX
# starts, as main.py does (on jaxlib 0.11+ they keep XLA:CPU from
# miscompiling bfloat16), on the 8 fake devices of this process's XLA_FLAGS.
_HALF_PRECISION_RUN = r"""
import functools, json, sys
from flaxish import cpu_defaults
status = cpu_defaults.apply()
import jax, jax.numpy as jnp
from examples.imagenet import input_pipeline, models, train
from flaxish import nn
models.MODELS['TinyResNet'] = models.ResNet.partial(stage_sizes=(1, 1))
digits = input_pipeline.load_mnist5k(16, num_train=32, num_test=16)
result = train.train_and_evaluate(digits, workdir=None, batch_size=16,
                                  num_epochs=1, **json.loads(sys.argv[1]))
state, model = result['state'], result['state'].optimizer.target
with nn.stateful(state.model_state, mutable=False):
  jaxpr = jax.make_jaxpr(functools.partial(model, train=False))(
      jnp.zeros((1, 32, 32, 3)))
print(json.dumps({
    'status': status.value, 'train': result['train'], 'eval': result['eval'],
    'param_dtypes': sorted({str(p.dtype) for p in
                            jax.tree_util.tree_leaves(model.params)}),
    'scale': state.dynamic_scale and float(state.dynamic_scale.scale),
    'jaxpr': str(jaxpr)}))
"""


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_half_precision_run(tiny_resnet, dtype):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop('FLAXISH_CPU_DEFAULTS', None)
  proc = subprocess.run(
      [sys.executable, '-c', _HALF_PRECISION_RUN,
       json.dumps(dict(tiny_resnet, dtype=dtype))],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-4000:]
  run = json.loads(proc.stdout.splitlines()[-1])
  assert np.isfinite(run['train']['loss'])
  assert np.isfinite(run['eval']['loss'])
  assert 0. <= run['eval']['accuracy'] <= 1.
  assert run['param_dtypes'] == ['float32']
  # float16 needs loss scaling (the scale starts at 2**16); bfloat16 not.
  if dtype == 'float16':
    assert 2.**10 <= run['scale'] <= 2.**16
  else:
    assert run['scale'] is None
  # The convolutions compute in `dtype`.
  short = {'bfloat16': 'bf16', 'float16': 'f16'}[dtype]
  assert 'conv_general_dilated' in run['jaxpr']
  assert f'{short}[1,16,16,64]' in run['jaxpr']


@pytest.mark.parametrize('xla_flags, off', [
    ('', False),
    ('--xla_force_host_platform_device_count=8', False),
    ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution', False),
    ('--xla_cpu_experimental_ynn_fusion_type=-reduce', True),
    ('--xla_force_host_platform_device_count=8 '
     '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-reduce',
     True),
    ('--xla_cpu_experimental_ynn_fusion_type=individual_convolution', True),
    ('--xla_cpu_experimental_ynn_fusion_type=reduce,elementwise', False),
    ('--xla_cpu_experimental_ynn_fusion_type=-reduce '
     '--xla_cpu_experimental_ynn_fusion_type=+reduce', False),
])
def test_ynn_reduce_fusion_off_reads_xla_flags(xla_flags, off):
  assert train.ynn_reduce_fusion_off(xla_flags) is off


def test_bfloat16_on_a_miscompiling_cpu_is_refused(tiny_resnet, monkeypatch):
  monkeypatch.setattr(train, '_jaxlib_version', lambda: (0, 11))
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  with pytest.raises(ValueError) as error:
    train.create_train_state(jax.random.PRNGKey(0), 'TinyResNet', 10, 32,
                             0.9, True, dtype='bfloat16')
  message = str(error.value)
  assert message.startswith('bfloat16 on CPU: XLA:CPU in jaxlib ')
  assert 'cpu_defaults.apply()' in message
  assert 'XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-reduce' in message
  # With the workaround in XLA_FLAGS, or on jaxlib 0.10, it is accepted
  # (shapes only here: nothing is compiled).
  monkeypatch.setenv('XLA_FLAGS',
                     '--xla_cpu_experimental_ynn_fusion_type=-reduce')
  train.check_dtype_on_this_backend('bfloat16')
  monkeypatch.setattr(train, '_jaxlib_version', lambda: (0, 10))
  monkeypatch.delenv('XLA_FLAGS')
  train.check_dtype_on_this_backend('bfloat16')
  train.check_dtype_on_this_backend('float16')
