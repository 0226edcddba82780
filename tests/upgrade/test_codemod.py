"""flaxish.upgrade.codemod: before/after fixtures per rule, lints, idempotence."""
import pathlib

import jax
import numpy as np
import pytest

pytest.importorskip('libcst')
from flaxish.upgrade.codemod import upgrade_source  # pylint: disable=g-import-not-at-top

FIXTURES = pathlib.Path(__file__).parent / 'fixtures'
# fixture -> the rewrite counts it must report.
RULES = {
    'modules': {'modules': 12},
    'tree_util': {'tree_util': 8},
    'index_ops': {'index_ops': 6, 'imports_dropped': 2},
    'device_array': {'device_array': 4},
    'random_misc': {'random_shuffle': 2, 'process_index': 2, 'tie_in': 1},
    'clip': {'clip_keywords': 3},
    'jtu': {'test_util': 3},
    'onp': {},
    'jit': {'jit_static_argnums': 3},
    'shape': {'shape_literal': 3},
    'copy': {'array_copy': 2},
    'tf_data': {'tf_data_threading': 2},
    'common_utils': {'common_utils': 2, 'modules': 1},
    'numpy_on_jax': {'numpy_on_jax_values': 4, 'tree_util': 1},
    'numpy_on_jax_onp': {'numpy_on_jax_values': 2},
}


@pytest.mark.parametrize('name', sorted(RULES))
def test_fixture(name):
  before = (FIXTURES / f'{name}_before.py').read_text()
  after = (FIXTURES / f'{name}_after.py').read_text()
  new, counts, _ = upgrade_source(before)
  assert new == after
  assert dict(counts) == RULES[name]


@pytest.mark.parametrize('name', sorted(RULES))
def test_idempotent(name):
  once, _, first = upgrade_source((FIXTURES / f'{name}_before.py').read_text())
  twice, counts, lints = upgrade_source(once)
  assert twice == once
  assert not counts
  # Only what was left for a hand edit is reported again.
  assert [m for _, m in lints] == [
      m for _, m in first if 'rewritten to' not in m and '(removed:' not in m]


def test_every_fixture_is_listed():
  names = {p.name[:-len('_before.py')] for p in FIXTURES.glob('*_before.py')}
  assert names == set(RULES)


def test_jit_static_argnums_lint():
  _, _, lints = upgrade_source((FIXTURES / 'jit_before.py').read_text())
  assert [line for line, _ in lints] == [6, 11, 13]
  assert all('rejects unhashable static values' in m and
             'flaxish.upgrade.compat.jit' in m and
             'tuple(sorted(d.items()))' in m for _, m in lints)


def test_shape_lint_names_the_argument():
  _, _, lints = upgrade_source((FIXTURES / 'shape_before.py').read_text())
  assert lints == [(9, '`newshape` is a jnp.array: under jit it is a tracer, '
                    'not a static shape. Pass a tuple of Python ints (or '
                    'np.array(...)) instead.')]


def test_tf_data_options_lint():
  _, _, lints = upgrade_source((FIXTURES / 'tf_data_before.py').read_text())
  assert [line for line, _ in lints] == [2, 3, 4]
  assert lints[0][1] == (
      '`ds.options().experimental_threading.private_threadpool_size = ...` '
      "changes a copy: today's tf.data raises. Set it on `options = "
      "tf.data.Options()`, then `ds = ds.with_options(options)` (removed: a "
      'threading option, performance only).')
  assert lints[2][1].endswith('`ds = ds.with_options(options)`.')


def test_index_op_with_keywords_is_a_lint():
  _, _, lints = upgrade_source((FIXTURES / 'index_ops_before.py').read_text())
  assert lints == [(12, 'jax.ops.index_* was removed: rewrite as '
                    'x.at[idx].set(y) by hand (positional x, idx, y expected).')]


def test_index_exp_count_with_an_imported_index():
  code = ('import jax\nfrom jax.ops import index, index_add\n'
          'x = index_add(x, index[2], y)\nz = w[jax.ops.index[0]]\n')
  new, counts, _ = upgrade_source(code)
  assert new == ('import jax\nx = x.at[2].add(y)\n'
                 'z = w[jax.numpy.index_exp[0]]\n')
  assert counts == {'index_ops': 1, 'imports_dropped': 2, 'index_exp': 1}


def test_iterating_an_array_is_a_lint():
  code = ('import jax.numpy as jnp\n'
          'xs = jnp.arange(3)\n'
          'for x in xs:\n  print(x)\n'
          'ys = [y for y in jnp.ones(2)]\n'
          'xs = [1, 2]\n'
          'for x in xs:\n  print(x)\n')
  new, counts, lints = upgrade_source(code)
  assert new == code and not counts
  assert [line for line, _ in lints] == [3, 5]
  assert lints[0][1] == (
      'iterating over the jax.Array `xs` yields 0-d jax.Arrays, not NumPy '
      'scalars: iterate over np.asarray(xs) (or xs.tolist()) if the loop needs '
      'NumPy or Python values.')


def test_local_names_that_shadow_nothing_are_untouched():
  code = ('def f(flax, tree_map):\n'
          '  return flax.nn, tree_map(1), jax.tree_map\n')
  assert upgrade_source(code)[0] == code


def _load(path):
  namespace = {}
  exec(compile(path.read_text(), str(path), 'exec'), namespace)  # pylint: disable=exec-used
  return namespace['update']


def test_numpy_on_jax_values_runs_under_jit():
  before = _load(FIXTURES / 'numpy_on_jax_onp_before.py')
  after = _load(FIXTURES / 'numpy_on_jax_onp_after.py')
  xs = [np.arange(3.0) + i for i in range(4)]
  w = np.array([0.5, -1.0, 2.0])
  with pytest.raises(jax.errors.TracerArrayConversionError):
    jax.jit(before)(xs, w)
  expected = [w.sum(), np.mean([x @ w for x in xs]) * 3.0]  # NumPy, eager
  np.testing.assert_allclose(before(xs, w), expected, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(after)(xs, w), expected, rtol=1e-6)


def test_numpy_on_jax_values_imports_jax_when_needed():
  code = ('import numpy\nfrom jax import random\n'
          'k = numpy.stack([random.PRNGKey(0)], axis=0)\n')
  new, counts, _ = upgrade_source(code)
  assert new == ('import numpy\nfrom jax import random\nimport jax\n\n'
                 'k = jax.numpy.stack([random.PRNGKey(0)], axis=0)\n')
  assert counts == {'numpy_on_jax_values': 1}
