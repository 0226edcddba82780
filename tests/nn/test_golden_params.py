"""The layers' parameter layouts (names, shapes, dtypes) match the golden
table checked in at tests/nn/golden/param_trees.json.

Checkpoints depend on these layouts, so a change must be deliberate: after
one, regenerate the table with `.venv/bin/python -m tests.nn.regen_golden`
and commit it with the change (and a CHANGELOG entry).
"""
import json

import pytest

from tests.nn import regen_golden


def _golden():
  with open(regen_golden.GOLDEN_PATH) as f:
    return json.load(f)


GOLDEN = _golden()


def _diff(expected, actual):
  lines = []
  for section in sorted(set(expected) | set(actual)):
    exp, act = expected.get(section, {}), actual.get(section, {})
    for path in sorted(set(exp) | set(act)):
      if exp.get(path) != act.get(path):
        lines.append(f'  {section} {path}: golden {exp.get(path, "absent")}, '
                     f'now {act.get(path, "absent")}')
  return '\n'.join(lines)


@pytest.mark.parametrize('name', sorted(regen_golden.CASES))
def test_layout_matches_the_golden_table(name):
  assert name in GOLDEN, (
      f'no golden layout for "{name}"; regenerate the table with '
      f'`{regen_golden.REGEN_COMMAND}` and commit '
      'tests/nn/golden/param_trees.json')
  actual = regen_golden.layout(regen_golden.CASES[name])
  assert actual == GOLDEN[name], (
      f'the parameter layout of "{name}" changed:\n'
      f'{_diff(GOLDEN[name], actual)}\n'
      'Checkpoints saved before this change will not restore. If the change '
      f'is intended, regenerate the table with `{regen_golden.REGEN_COMMAND}`'
      ', commit tests/nn/golden/param_trees.json and note it in CHANGELOG.md')


def test_golden_table_has_no_stale_entries():
  stale = sorted(set(GOLDEN) - set(regen_golden.CASES))
  assert not stale, (f'golden layouts {stale} have no case any more; '
                     f'regenerate with `{regen_golden.REGEN_COMMAND}`')
