"""flaxish.testing.Benchmark: deferred assertions, JSON report, TensorBoard scalars."""
import json
import os
import unittest

import pytest

pytest.importorskip('absl')
from absl import flags  # pylint: disable=g-import-not-at-top

from flaxish.testing import Benchmark  # pylint: disable=g-import-not-at-top


class _Bench(Benchmark):
  __test__ = False  # run through unittest below

  def test_fails_late(self):
    self.assertEqual(1, 2)
    self.assertLess(3, 4)
    self.assertTrue(False, 'second failure')
    self.report_metrics({'accuracy': 0.5})
    self.report_metric('loss', 1.5)
    self.report_extras({'model_name': 'mlp'})

  def test_passes(self):
    self.assertBetween(0.99, 0.98, 1.0)
    self.report_wall_time(12.5)
    self.report_extra('description', 'ok')
    self.model_dir = self.get_tmp_model_dir()


@pytest.fixture
def output_dir(tmp_path):
  holder = flags.FLAGS['benchmark_output_dir']
  old, holder.value = holder.value, str(tmp_path / 'out')
  yield tmp_path / 'out'
  holder.value = old


def _run(name):
  test, result = _Bench(name), unittest.TestResult()
  test.run(result)
  return test, result


def test_assertions_are_deferred_and_reported(output_dir):
  _, result = _run('test_fails_late')
  assert len(result.failures) == 1
  message = result.failures[0][1]
  assert '1 != 2' in message and 'second failure' in message
  report = json.loads((output_dir / '_Bench.test_fails_late.json').read_text())
  assert report['name'] == '_Bench.test_fails_late'
  assert report['succeeded'] is False
  assert report['metrics'] == {'accuracy': 0.5, 'loss': 1.5}
  assert report['extras']['model_name'] == 'mlp'
  assert '1 != 2' in report['extras']['failed_assertions']
  assert 'wall_time' not in report


def test_passing_benchmark_report(output_dir):
  test, result = _run('test_passes')
  assert result.wasSuccessful()
  assert json.loads((output_dir / '_Bench.test_passes.json').read_text()) == {
      'name': '_Bench.test_passes', 'succeeded': True, 'metrics': {},
      'extras': {'description': 'ok'}, 'wall_time': 12.5}
  assert test.model_dir == os.path.join(str(output_dir), '_Bench.test_passes')


def test_tmp_model_dir_without_the_flag():
  test, result = _run('test_passes')
  assert result.wasSuccessful()
  assert test.model_dir.endswith(os.sep + '_Bench.test_passes')
  assert os.path.isdir(os.path.dirname(test.model_dir))


def test_read_summaries_of_flaxish_writer(tmp_path):
  pytest.importorskip('tensorboard')
  from flaxish.metrics.tensorboard import SummaryWriter  # pylint: disable=g-import-not-at-top
  with SummaryWriter(str(tmp_path)) as writer:
    for step, value in enumerate([0.25, 0.5, 0.75]):
      writer.scalar('eval_accuracy', value, step)
    writer.text('notes', 'not a scalar', 0)
  summaries = _Bench('test_passes').read_summaries(str(tmp_path))
  assert set(summaries) == {'eval_accuracy'}
  assert [(s, v) for _, s, v in summaries['eval_accuracy']] == [
      (0, 0.25), (1, 0.5), (2, 0.75)]


def test_read_summaries_of_tensorflow_scalars(tmp_path):
  tf = pytest.importorskip('tensorflow')
  with tf.summary.create_file_writer(str(tmp_path)).as_default():
    tf.summary.scalar('loss', 2.5, step=7)
  summaries = _Bench('test_passes').read_summaries(str(tmp_path))
  assert [(s, v) for _, s, v in summaries['loss']] == [(7, 2.5)]
