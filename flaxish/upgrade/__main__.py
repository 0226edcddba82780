"""`python -m flaxish.upgrade [--diff | --write] PATH...`: upgrade 2020 code.

Prints a unified diff (default) or rewrites the files in place (`--write`),
then a summary: files changed, rewrites by rule, and every line that needs a
hand edit as `file:line: instruction`.
"""
import argparse
import collections
import difflib
import os
import sys

from flaxish.upgrade.codemod import upgrade_source

__all__ = ['main']


def _python_files(paths):
  for path in paths:
    if os.path.isdir(path):
      for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        yield from (os.path.join(root, f) for f in sorted(files) if f.endswith('.py'))
    else:
      yield path


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m flaxish.upgrade',
      description='Rewrite 2020 flax / JAX code for flaxish and today\'s JAX.')
  parser.add_argument('paths', nargs='+', metavar='PATH', help='files or folders')
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument('--diff', action='store_true', help='print a unified diff (default)')
  mode.add_argument('--write', action='store_true', help='rewrite the files in place')
  args = parser.parse_args(argv)
  totals, lints, changed, seen = collections.Counter(), [], 0, 0
  for path in _python_files(args.paths):
    seen += 1
    with open(path, encoding='utf-8') as f:
      code = f.read()
    try:
      new, counts, file_lints = upgrade_source(code)
    except Exception as e:  # pylint: disable=broad-except
      lints.append(f'{path}:1: could not parse ({type(e).__name__}); fix the '
                   'syntax (Python 3) and rerun.')
      continue
    totals.update(counts)
    lints.extend(f'{path}:{line}: {message}' for line, message in file_lints)
    if new == code:
      continue
    changed += 1
    if args.write:
      with open(path, 'w', encoding='utf-8') as f:
        f.write(new)
    else:
      sys.stdout.writelines(difflib.unified_diff(
          code.splitlines(True), new.splitlines(True), path, path))
  print(f'\nflaxish.upgrade: {changed} of {seen} files '
        f'{"changed" if args.write else "would change"}.')
  for rule, count in sorted(totals.items()):
    print(f'  {rule}: {count} rewrite(s)')
  print(f'{len(lints)} line(s) to check by hand' + (':' if lints else '.'))
  for lint in lints:
    print('  ' + lint)
  return 0


if __name__ == '__main__':
  sys.exit(main())
