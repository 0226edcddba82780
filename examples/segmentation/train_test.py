"""Tests of the segmentation example: mean IoU and pixel accuracy against a
NumPy reference on hand-made masks, seeded canvases of real digits, and a
short run on them that beats the trivial baseline, resumed from a
checkpoint; the tfds path fails fast without data."""
import json

import jax
import numpy as np
import pytest

from examples.mnist import input_pipeline as mnist_input_pipeline
from examples.segmentation import input_pipeline
from examples.segmentation import train


def _reference_metrics(truth, predicted):
  """Per-class IoU |T & P| / |T | P| by set logic, averaged over classes
  in the truth or the prediction; pixel accuracy."""
  ious = []
  for c in np.union1d(truth, predicted):
    t, p = truth == c, predicted == c
    ious.append(np.sum(t & p) / np.sum(t | p))
  return np.mean(ious), np.mean(truth == predicted)


def test_mean_iou_and_pixel_accuracy_match_numpy_on_hand_made_masks():
  truth = np.array([[0, 0], [1, 1]])
  predicted = np.array([[0, 1], [1, 1]])
  metrics = train.segmentation_metrics(
      train.confusion_matrix(truth, predicted, 3))
  # class 0: 1 / 2; class 1: 2 / 3; class 2 appears nowhere.
  assert metrics['mean_iou'] == pytest.approx((1 / 2 + 2 / 3) / 2)
  assert metrics['pixel_accuracy'] == pytest.approx(3 / 4)
  rng = np.random.RandomState(0)
  truth = rng.randint(0, 5, size=(3, 9, 7))
  predicted = np.where(rng.rand(3, 9, 7) < 0.6, truth,
                       rng.randint(0, 6, size=(3, 9, 7)))
  metrics = train.segmentation_metrics(
      train.confusion_matrix(truth, predicted, 6))
  mean_iou, accuracy = _reference_metrics(truth, predicted)
  assert metrics['mean_iou'] == pytest.approx(mean_iou, rel=1e-12)
  assert metrics['pixel_accuracy'] == pytest.approx(accuracy, rel=1e-12)


def test_canvases_are_seeded_and_labelled_from_the_digits():
  digits, _ = mnist_input_pipeline.load_mnist5k(0)
  digits = {k: v[:50] for k, v in digits.items()}
  first = input_pipeline.make_canvases(digits, 20, seed=3)
  again = input_pipeline.make_canvases(digits, 20, seed=3)
  other = input_pipeline.make_canvases(digits, 20, seed=4)
  for key in ('image', 'mask'):
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first['mask'], other['mask'])
  assert first['image'].shape == (20, 64, 64, 1)
  assert first['mask'].shape == (20, 64, 64)
  labelled = first['mask'] > 0
  assert np.all(first['image'][..., 0][labelled] > 0.5)  # ink
  assert np.all(first['image'][..., 0][~labelled] <= 0.5)
  assert set(np.unique(first['mask'])) <= set(range(11))
  # Only the classes of the digits given: here all 7s.
  sevens = {k: v[digits['label'] == 7] for k, v in digits.items()}
  masks = input_pipeline.make_canvases(sevens, 5, seed=0)['mask']
  assert set(np.unique(masks)) == {0, 8}


def test_train_and_test_canvases_come_from_disjoint_digits(monkeypatch):
  train_digits, test_digits = mnist_input_pipeline.load_mnist5k(0)
  seen = {d.tobytes() for d in train_digits['image']}
  assert not any(d.tobytes() in seen for d in test_digits['image'])
  drawn_from = []
  make_canvases = input_pipeline.make_canvases
  def recording_make_canvases(digits, num, seed):
    drawn_from.append(digits)
    return make_canvases(digits, num, seed)
  monkeypatch.setattr(input_pipeline, 'make_canvases',
                      recording_make_canvases)
  train_ds, test_ds = input_pipeline.get_datasets('digits', 0, num_train=10,
                                                  num_test=5)
  assert len(drawn_from) == 2
  for digits, expected in zip(drawn_from, (train_digits, test_digits)):
    np.testing.assert_array_equal(digits['image'], expected['image'])
  again, _ = input_pipeline.get_datasets('digits', 0, num_train=10,
                                         num_test=5)
  np.testing.assert_array_equal(train_ds['image'], again['image'])
  assert test_ds['mask'].shape == (5, 64, 64)


def test_short_run_beats_the_trivial_baseline_and_resumes(tmp_path):
  train_ds, test_ds = input_pipeline.get_datasets('digits', 0, num_train=320,
                                                  num_test=100)
  hparams = dict(num_classes=11, features=8, learning_rate=1e-2,
                 batch_size=16, seed=0)
  first = train.train(train_ds, test_ds, workdir=str(tmp_path), num_epochs=1,
                      **hparams)
  result = train.train(train_ds, test_ds, workdir=str(tmp_path),
                       num_epochs=2, **hparams)
  assert result['epochs_run'] == 1
  assert int(result['optimizer'].state.step) == 40
  baseline = result['baseline']
  # The trivial baseline, recomputed: background everywhere.
  background = np.mean(test_ds['mask'] == 0)
  assert baseline['pixel_accuracy'] == pytest.approx(background)
  assert baseline['mean_iou'] == pytest.approx(
      background / len(np.unique(test_ds['mask'])))
  test = result['test']
  # Measured: mean IoU 0.120 against the baseline's 0.086.
  assert test['mean_iou'] > baseline['mean_iou'] + 0.02, (test, baseline)
  assert test['loss'] < first['test']['loss']
  records = [json.loads(line) for line in
             (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert [(r['split'], r['epoch']) for r in records] == [
      ('train', 1), ('test', 1), ('train', 2), ('test', 2)]
  for name in ('predictions.png', 'curves.png'):
    assert (tmp_path / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # The running BatchNorm statistics moved from their initial 0 and 1.
  _, initial = train.create_model(jax.random.PRNGKey(0), (64, 64, 1), 11, 8)
  leaves = jax.tree_util.tree_leaves
  for trained, start in zip(leaves(result['batch_stats'].as_dict()),
                            leaves(initial.as_dict())):
    assert not np.allclose(trained, start)


def test_batch_larger_than_the_data_is_an_error():
  train_ds, test_ds = input_pipeline.get_datasets('digits', 0, num_train=10,
                                                  num_test=5)
  with pytest.raises(ValueError, match='batch_size 16 is larger than the '
                     'training set'):
    train.train(train_ds, test_ds, workdir=None, num_classes=11, features=8,
                learning_rate=1e-2, batch_size=16, num_epochs=1, seed=0)


def test_missing_tfds_data_fails_fast_and_suggests_digits(tmp_path):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(RuntimeError, match='--dataset=digits'):
    input_pipeline.get_datasets('oxford_iiit_pet',
                                tfds_data_dir=str(tmp_path))


def test_unknown_dataset_is_an_error():
  with pytest.raises(ValueError, match="unknown dataset 'pets'"):
    input_pipeline.get_datasets('pets')
