"""Tests of flaxish.nn.summary: nn.tabulate and Model.summary."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxish import nn
from tests.nn._helpers import MLP, Affine


class Net(nn.Module):

  def apply(self, x):
    x = MLP(x, hidden=6, out=4)
    return Affine(x, features=3, name='head').astype(jnp.bfloat16)


def test_tabulate_rows_and_exact_totals(capsys):
  summary = nn.tabulate(Net, ((2, 5), jnp.float32))
  printed = capsys.readouterr().out
  assert [r.path for r in summary.rows] == [
      '/', '/MLP_0', '/MLP_0/Affine_0', '/MLP_0/Affine_1', '/head']
  rows = {r.path: r for r in summary.rows}
  assert rows['/'].outputs == 'bfloat16[2, 3]'
  assert rows['/MLP_0/Affine_0'].params == {'bias': 'float32[6]',
                                            'kernel': 'float32[5, 6]'}
  assert rows['/MLP_0/Affine_1'].num_params == 6 * 4 + 4
  assert rows['/MLP_0'].num_params == 0
  expected = (5 * 6 + 6) + (6 * 4 + 4) + (4 * 3 + 3)
  assert summary.total_params == expected
  assert summary.total_bytes == 4 * expected
  assert summary.total_params == sum(r.num_params for r in summary.rows)
  assert '/MLP_0/Affine_1' in printed and f'{expected:,}' in printed
  assert str(summary) in printed


def test_tabulate_of_a_model_matches_tabulate_of_the_class():
  x = jnp.ones((2, 5))
  _, params = Net.init(jax.random.PRNGKey(0), x)
  by_model = nn.tabulate(nn.Model(Net, params), x, print_table=False)
  by_class = nn.tabulate(Net, x, print_table=False)
  assert by_model == by_class
  total = sum(np.size(p) for p in jax.tree_util.tree_leaves(params))
  assert by_model.total_params == total


def test_tabulate_rejects_other_objects():
  with pytest.raises(TypeError, match='Module class or an nn.Model'):
    nn.tabulate(lambda x: x, (1,))
