"""`Benchmark`: the 2020 `flax.testing.Benchmark` test case (needs `absl-py`).

`assert*` failures do not stop a test: they are raised in `tearDown`, after
the results are reported as JSON `{"name", "succeeded", "wall_time",
"metrics", "extras"}` (logged, and written to `DIR/<Class>.<test>.json` with
`--benchmark_output_dir=DIR`).
"""
import functools
import glob
import json
import os
import tempfile

from absl import flags, logging
from absl.testing import absltest

__all__ = ['Benchmark']

if 'benchmark_output_dir' not in flags.FLAGS:
  flags.DEFINE_string('benchmark_output_dir', None,
                      'Benchmark output directory.')


def _output_dir():
  return flags.FLAGS['benchmark_output_dir'].value


class Benchmark(absltest.TestCase):
  """A test case that defers `assert*` failures and reports metrics as JSON."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    for name in dir(self):
      if name.startswith('assert') and callable(getattr(self, name)):
        setattr(self, name,
                functools.partial(self._deferred, getattr(self, name)))
    if _output_dir():
      os.makedirs(_output_dir(), exist_ok=True)

  def _deferred(self, assertion, *args, **kwargs):
    try:
      return assertion(*args, **kwargs)
    except self.failureException as e:
      self._outstanding_fails.append(e)

  def setUp(self):
    super().setUp()
    self._wall_time, self._outstanding_fails = None, []
    self._metrics, self._extras = {}, {}

  def tearDown(self):
    super().tearDown()
    failed = '\n'.join(map(str, self._outstanding_fails))
    results = {'name': self._name(), 'succeeded': not failed,
               'metrics': self._metrics, 'extras': dict(self._extras)}
    if failed:
      results['extras']['failed_assertions'] = failed
    if self._wall_time is not None:
      results['wall_time'] = self._wall_time
    logging.info(json.dumps(results))
    if _output_dir():
      with open(os.path.join(_output_dir(), self._name() + '.json'), 'w') as f:
        json.dump(results, f)
    if failed:
      raise self.failureException(failed)

  def _name(self):
    return f'{type(self).__name__}.{self._testMethodName}'

  def get_tmp_model_dir(self):
    """`<benchmark_output_dir or a new temp dir>/<Class>.<test>`."""
    return os.path.join(_output_dir() or tempfile.mkdtemp(), self._name())

  def has_outstanding_fails(self):
    return bool(self._outstanding_fails)

  def read_summaries(self, path):
    """TensorBoard scalars in `path` (needs `tensorboard`).

    Returns `{tag: [(wall_time, step, value), ...]}`.
    """
    # pylint: disable=g-import-not-at-top
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util
    data = {}
    for name in sorted(glob.glob(os.path.join(path, '*tfevents*'))):
      for event in event_file_loader.EventFileLoader(name).Load():
        for value in event.summary.value:
          if value.HasField('simple_value'):
            number = value.simple_value
          elif value.metadata.plugin_data.plugin_name == 'scalars':
            number = tensor_util.make_ndarray(value.tensor).item()
          else:
            continue
          data.setdefault(value.tag, []).append(
              (event.wall_time, event.step, number))
    return data

  def report_wall_time(self, wall_time: float):
    self._wall_time = wall_time

  def report_metrics(self, metrics):
    self._metrics.update(metrics)

  def report_metric(self, name: str, value: float):
    self._metrics[name] = value

  def report_extras(self, extras):
    self._extras.update(extras)

  def report_extra(self, name: str, value: str):
    self._extras[name] = value
