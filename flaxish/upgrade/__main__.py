"""`python -m flaxish.upgrade [--diff | --write] PATH...`: print a diff or
rewrite the files, then a summary: files changed, rewrites by rule, lines to
check by hand.
"""
import argparse
import collections
import difflib
import glob
import os
import sys

from flaxish.upgrade.codemod import upgrade_source

__all__ = ['main']


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog='python -m flaxish.upgrade',
      description="Rewrite 2020 flax / JAX code for flaxish and today's JAX.")
  parser.add_argument('paths', nargs='+', metavar='PATH',
                      help='files or folders')
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument('--diff', action='store_true',
                    help='print a unified diff (default)')
  mode.add_argument('--write', action='store_true',
                    help='rewrite the files in place')
  args = parser.parse_args(argv)
  files = []
  for p in args.paths:
    files += (sorted(glob.glob(os.path.join(p, '**', '*.py'), recursive=True))
              if os.path.isdir(p) else [p])
  totals, lints, changed = collections.Counter(), [], 0
  for path in files:
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
    changed += new != code
    if new != code and args.write:
      with open(path, 'w', encoding='utf-8') as f:
        f.write(new)
    elif new != code:
      sys.stdout.writelines(difflib.unified_diff(
          code.splitlines(True), new.splitlines(True), path, path))
  print(f'\nflaxish.upgrade: {changed} of {len(files)} files '
        f'{"changed" if args.write else "would change"}.')
  print(''.join(f'  {rule}: {count} rewrite(s)\n'
                for rule, count in sorted(totals.items())) +
        f'{len(lints)} line(s) to check by hand' + (':' if lints else '.'))
  print(''.join(f'  {lint}\n' for lint in lints), end='')
  return 0


if __name__ == '__main__':
  sys.exit(main())
