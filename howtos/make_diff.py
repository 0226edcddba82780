"""Writes, refreshes and checks the HOWTO diffs in howtos/diffs/.

A HOWTO is an edited copy of `examples/mnist/`; the unified diff between the
example and the copy, with paths relative to the repository root, is
`howtos/diffs/<name>.diff`. It applies from the repository root with
`git apply` or `patch -p1`. To change a HOWTO (or start a new one):

    python howtos/make_diff.py edit NAME    # howtos/edited/NAME/ = the example
                                            # with NAME's diff applied
    ... edit the files in howtos/edited/NAME/ ...
    python howtos/make_diff.py diff NAME    # rewrites howtos/diffs/NAME.diff

After a change to the example, `refresh` re-applies every diff (the context
around each hunk must still match; line offsets are fine) and writes it again
against the new example, so line numbers and context stay current:

    python howtos/make_diff.py refresh [NAME ...]
    python howtos/make_diff.py check        # applies every diff, both tools

`howtos/edited/` is git-ignored scratch space. Needs only the standard
library, `git` and `patch`.
"""
import argparse
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

HOWTOS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HOWTOS_DIR)
EXAMPLE = 'examples/mnist'  # every HOWTO is a diff against this example
DIFFS_DIR = os.path.join(HOWTOS_DIR, 'diffs')
EDITED_DIR = os.path.join(HOWTOS_DIR, 'edited')
# `edit NAME` also keeps the example it started from here, so that `diff NAME`
# can refuse to write a diff that would undo later changes to the example.
_BASE = '.base'

_IGNORED = ('__pycache__', '.pytest_cache')


def diff_path(name: str) -> str:
  return os.path.join(DIFFS_DIR, f'{name}.diff')


def names() -> List[str]:
  """The HOWTOs that have a diff, sorted."""
  return sorted(f[:-len('.diff')] for f in os.listdir(DIFFS_DIR)
                if f.endswith('.diff'))


def _read_tree(root: str) -> Dict[str, str]:
  """{relative path: text} of the files under `root`, caches skipped."""
  files = {}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED)
    for filename in filenames:
      if filename.endswith(('.pyc', '.rej', '.orig')):
        continue
      path = os.path.join(dirpath, filename)
      with open(path, encoding='utf-8') as f:
        files[os.path.relpath(path, root).replace(os.sep, '/')] = f.read()
  return files


def make_diff(name: str, original: str, edited: str,
              prefix: str = EXAMPLE) -> str:
  """The HOWTO diff from directory `original` to directory `edited`.

  Paths in the diff are `a/<prefix>/<file>` and `b/<prefix>/<file>`.
  """
  old, new = _read_tree(original), _read_tree(edited)
  chunks = [
      f'HOWTO {name} for {prefix}/ (see howtos/README.md). Apply it from\n'
      'the repository root with `git apply` or `patch -p1`; change it with\n'
      f'`python howtos/make_diff.py edit {name}`, then `diff {name}`.\n\n']
  for rel in sorted(set(old) | set(new)):
    a, b = old.get(rel), new.get(rel)
    if a == b:
      continue
    for text in (a, b):
      if text and not text.endswith('\n'):
        raise ValueError(f'{rel}: add a newline at the end of the file')
    path = f'{prefix}/{rel}'
    header = [f'diff --git a/{path} b/{path}\n']
    if a is None:
      header.append('new file mode 100644\n')
    elif b is None:
      header.append('deleted file mode 100644\n')
    lines = difflib.unified_diff(
        (a or '').splitlines(keepends=True),
        (b or '').splitlines(keepends=True),
        fromfile='/dev/null' if a is None else f'a/{path}',
        tofile='/dev/null' if b is None else f'b/{path}', n=3)
    chunks.append(''.join(header + list(lines)))
  if len(chunks) == 1:
    raise ValueError(f'{edited} does not differ from {original}')
  return ''.join(chunks)


def copy_example(dest_root: str) -> str:
  """Copies the example to `<dest_root>/examples/mnist/` (with
  `examples/__init__.py`); returns `dest_root`."""
  os.makedirs(os.path.join(dest_root, 'examples'), exist_ok=True)
  shutil.copy(os.path.join(REPO, 'examples', '__init__.py'),
              os.path.join(dest_root, 'examples', '__init__.py'))
  shutil.copytree(os.path.join(REPO, EXAMPLE),
                  os.path.join(dest_root, EXAMPLE),
                  ignore=shutil.ignore_patterns(*_IGNORED, '*.pyc'))
  return dest_root


def apply_diff(diff_file: str, root: str, tool: str = 'git') -> str:
  """Applies `diff_file` inside `root` (which holds `examples/mnist/`) with
  `git apply` or `patch -p1`; returns the tool's output, raises on failure.

  Git's repository discovery stops at `root` (GIT_CEILING_DIRECTORIES), so
  `git apply` patches the files under `root` even inside a work tree.
  """
  if tool == 'git':
    cmd = ['git', 'apply', '--verbose', os.path.abspath(diff_file)]
  elif tool == 'patch':
    cmd = ['patch', '-p1', '--forward', '--batch', '-i',
           os.path.abspath(diff_file)]
  else:
    raise ValueError(f'tool must be "git" or "patch", got {tool!r}')
  env = dict(os.environ, GIT_CEILING_DIRECTORIES=os.path.dirname(
      os.path.abspath(root)))
  proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                        env=env, check=False)
  if proc.returncode:
    raise RuntimeError(f'{" ".join(cmd[:2])} of {diff_file} failed in '
                       f'{root}:\n{proc.stdout}{proc.stderr}')
  return proc.stdout + proc.stderr


def patched_example(name: str, root: str, tool: str = 'git') -> str:
  """Copies the example under `root` and applies NAME's diff; returns the
  patched example's directory."""
  copy_example(root)
  apply_diff(diff_path(name), root, tool)
  return os.path.join(root, EXAMPLE)


def regenerate(name: str, edited: Optional[str] = None) -> str:
  """The diff of NAME: from its edited copy if given, else by re-applying
  the current diff to the current example."""
  with tempfile.TemporaryDirectory() as tmp:
    if edited is None:
      edited = patched_example(name, os.path.join(tmp, 'edited'))
    return make_diff(name, os.path.join(REPO, EXAMPLE), edited)


def _write(name: str, text: str) -> bool:
  path = diff_path(name)
  old = open(path, encoding='utf-8').read() if os.path.exists(path) else None
  if old != text:
    os.makedirs(DIFFS_DIR, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
      f.write(text)
  return old != text


def _edit(name: str, force: bool) -> int:
  dest = os.path.join(EDITED_DIR, name)
  base = os.path.join(EDITED_DIR, _BASE, name)
  if os.path.exists(dest):
    if not force:
      print(f'{dest} exists: edit it, or pass --force to start over')
      return 1
    shutil.rmtree(dest)
  if os.path.exists(base):
    shutil.rmtree(base)
  with tempfile.TemporaryDirectory() as tmp:
    if os.path.exists(diff_path(name)):
      try:
        src = patched_example(name, tmp)
      except RuntimeError:
        # Apply the hunks that still apply; the others go to *.rej files.
        src = os.path.join(tmp, 'partial', EXAMPLE)
        copy_example(os.path.join(tmp, 'partial'))
        subprocess.run(['git', 'apply', '--reject', diff_path(name)],
                       cwd=os.path.join(tmp, 'partial'), capture_output=True,
                       check=False)
        print(f'{name}.diff does not apply to the example any more: apply '
              f'the *.rej files in howtos/edited/{name}/ by hand, delete '
              'them, then run diff')
    else:
      src = os.path.join(copy_example(tmp), EXAMPLE)
      print(f'{name} is a new HOWTO: starting from the plain example')
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*_IGNORED))
  shutil.copytree(os.path.join(REPO, EXAMPLE), base,
                  ignore=shutil.ignore_patterns(*_IGNORED, '*.pyc'))
  print(f'edit {os.path.relpath(dest)}/, then run: '
        f'python howtos/make_diff.py diff {name}')
  return 0


def _diff(name: str, edited: Optional[str]) -> int:
  if edited is None:
    edited = os.path.join(EDITED_DIR, name)
    base = os.path.join(EDITED_DIR, _BASE, name)
    if os.path.exists(base) and _read_tree(base) != _read_tree(
        os.path.join(REPO, EXAMPLE)):
      print(f'{EXAMPLE}/ changed since `edit {name}`: a diff from '
            f'{os.path.relpath(edited)}/ would undo those changes. Save your '
            f'edits, then `edit {name} --force` and redo them (or pass --dir '
            'to diff anyway).')
      return 1
  changed = _write(name, regenerate(name, edited))
  print(f'{os.path.relpath(diff_path(name))} '
        f'{"written" if changed else "unchanged"}')
  return 0


def _check(names_: List[str]) -> int:
  failed = 0
  for name in names_:
    try:
      for tool in ('git', 'patch'):
        with tempfile.TemporaryDirectory() as tmp:
          patched_example(name, tmp, tool)
    except RuntimeError as e:
      failed += 1
      print(f'{name}: FAILS\n{e}')
      continue
    with open(diff_path(name), encoding='utf-8') as f:
      stale = regenerate(name) != f.read()
    print(f'{name}: applies' +
          (' (context or line numbers moved: run refresh)' if stale else ''))
  return 1 if failed else 0


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  p = sub.add_parser('edit', help='make howtos/edited/NAME/ to edit')
  p.add_argument('name')
  p.add_argument('--force', action='store_true',
                 help='replace an existing edited copy')
  p = sub.add_parser('diff', help='write diffs/NAME.diff from the edited copy')
  p.add_argument('name')
  p.add_argument('--dir', help='the edited copy of examples/mnist/ (default '
                 'howtos/edited/NAME/)')
  p = sub.add_parser('refresh', help='re-write diffs against the current '
                     'example')
  p.add_argument('names', nargs='*', help='default: all')
  p = sub.add_parser('check', help='apply every diff with git apply and '
                     'patch -p1')
  p.add_argument('names', nargs='*', help='default: all')
  args = parser.parse_args(argv)

  if args.command == 'edit':
    return _edit(args.name, args.force)
  if args.command == 'diff':
    return _diff(args.name, args.dir)
  if args.command == 'refresh':
    failed = 0
    for name in args.names or names():
      try:
        changed = _write(name, regenerate(name))
      except RuntimeError:
        failed += 1
        print(f'{name}: does not apply any more; run `edit {name}` (it keeps '
              'the hunks that apply and writes *.rej files for the others)')
        continue
      print(f'{name}: {"refreshed" if changed else "up to date"}')
    return 1 if failed else 0
  return _check(args.names or names())


if __name__ == '__main__':
  sys.exit(main())
